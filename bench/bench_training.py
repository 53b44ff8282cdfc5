"""Training throughput and peak memory per method on one CPU model, versus HF PEFT's LoRA.

Model: a Llama of ~27M parameters from a LlamaConfig (hidden 512, 6 layers, intermediate 1376,
8 heads, vocab 8000, untied head), random init (seed 0), fp32. Data: random token ids, micro-batch
8 x 256 tokens, every token a target. Methods (all adapters on every linear layer but the head):

  fft               every parameter trains
  lora              ours, r=16, alpha=16, dropout 0.05
  peft-lora         HF PEFT's LoraConfig with the same r, alpha, dropout, target_modules="all-linear"
  spa               ours, d=0.6% (rank 0), masks built at once (mask_criterion=random)
  rosa-robust       ours, r=16, d=0.6%, masks built at once (steady state after mask selection)
  rosa-orthogonal   ours, r=16, sampled once before timing (steps between resamples); one resample
                    of all layers is timed separately

One step function drives every method: forward, token loss (rosa.training.loop.token_loss_sum),
backward, grad clipping, AdamW step, zero_grad, as Trainer.train_step. Every model lives in one
process; after a warm-up step each, rounds run one timed step per method in a rotating order
(interleaved, so drifts of the machine hit all methods alike). Reported: medians over rounds.

Peak memory: each method first in a fresh subprocess (same model, data, step) reading VmHWM,
the process's resident high-water mark (/proc/self/status; ru_maxrss as a fallback): after building the model ("built") and after
3 steps ("peak"); "train" = peak - built is what training adds (activations, grads, AdamW state,
method buffers). Exact tensor accounting of trainable state is printed too (params + grads + AdamW
moments, bytes).

    python bench/bench_training.py [--rounds 7] [--threads 1] [--record]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

METHODS = ["fft", "lora", "peft-lora", "spa", "rosa-robust", "rosa-orthogonal"]
ARCH = dict(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8,
            num_key_value_heads=8, max_position_embeddings=512, tie_word_embeddings=False)
RANK, DENSITY, BATCH, SEQ = 16, 0.006, 8, 256


def build_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**ARCH, attn_implementation="sdpa")).float()


def build(name: str, impl: str | None = None):
    """(model, trainable params, optimizer, per-method extra info) for one method; ``impl`` overrides
    fnmodel.impl of spa / rosa-robust (default: the config's, auto)."""
    model = build_model()
    extra = {}
    if name == "peft-lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=16, lora_dropout=0.05,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": 1e-4}]
    else:
        from rosa.config import compose, validate
        from rosa.methods import StepContext, get_method
        overrides = {"fft": [], "lora": [f"fnmodel.rank={RANK}"],
                     "spa": [f"fnmodel.density={DENSITY}", "fnmodel.mask_criterion=random"],
                     "rosa-robust": [f"fnmodel.rank={RANK}", f"fnmodel.density={DENSITY}", "fnmodel.mask_criterion=random"],
                     "rosa-orthogonal": [f"fnmodel.rank={RANK}", "fnmodel.resample_every=never"]}[name]
        if impl:
            overrides.append(f"fnmodel.impl={impl}")
        run = validate(compose([f"fnmodel={name}", "device=cpu", "precision=fp32", *overrides]))
        method = get_method(run.fnmodel, seed=0)
        model = method.prepare(model)
        if name == "rosa-orthogonal":   # the first sampling, as the loop's first before_step does
            ctx = StepContext(model=model, step=0, phase_step=0, epoch=0, steps_per_epoch=1, total_steps=1,
                              micro_batches_per_step=1)
            method.before_step(ctx)
            extra["resample_s"] = method.resample(model, 1)   # one more, timed: merge + SVD of every layer
        groups = method.param_groups(model, argparse.Namespace(lr=1e-4))
        extra["describe"] = method.describe()
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=1e-4)
    return model, params, optimizer, extra


def make_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, ARCH["vocab_size"], (BATCH, SEQ), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def train_step(model, params, optimizer, batch) -> float:
    """What Trainer.train_step does for one micro-batch (fp32, no grad scaler)."""
    from rosa.training.loop import token_loss_sum
    model.train()
    loss_sum, n = token_loss_sum(model, batch)
    loss = loss_sum / max(n, 1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def state_bytes(params, optimizer) -> int:
    total = sum(2 * p.numel() * p.element_size() for p in params)   # parameter + gradient
    for state in optimizer.state.values():
        total += sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t) and t.dim())
    return total


def maxrss_mib() -> float:
    """Resident high-water mark of this process (VmHWM; unlike ru_maxrss it starts afresh at exec,
    so a child does not inherit its parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(name: str, steps: int) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    batch = make_batch()
    model, params, optimizer, _ = build(name)
    built = maxrss_mib()
    for _ in range(steps):
        train_step(model, params, optimizer, batch)
    print(json.dumps({"built": built, "peak": maxrss_mib(), "state": state_bytes(params, optimizer),
                      "trainable": sum(p.numel() for p in params)}))


def measure_memory(name: str, threads: int) -> dict:
    env = dict(os.environ, BENCH_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed steps per method (interleaved rounds)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared machine, OpenMP barriers stall 2-thread steps unpredictably)")
    ap.add_argument("--methods", nargs="*", default=METHODS)
    ap.add_argument("--no-memory", action="store_true", help="skip the per-method subprocess memory runs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, 3)
    torch.set_num_threads(args.threads)
    n_params = sum(p.numel() for p in build_model().parameters())
    print(f"Llama {ARCH['num_hidden_layers']}x{ARCH['hidden_size']} (ffn {ARCH['intermediate_size']}, vocab "
          f"{ARCH['vocab_size']}), {n_params / 1e6:.1f}M parameters, fp32, micro-batch {BATCH} x {SEQ} tokens, "
          f"{args.threads} threads; AdamW; median of {args.rounds} interleaved rounds; load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    started = time.time()
    # memory first, each method in a fresh subprocess, while this process is still small
    mem = {} if args.no_memory else {n: measure_memory(n, args.threads) for n in args.methods}
    batch = make_batch()
    built = {name: build(name) for name in args.methods}
    for name, (model, params, opt, _) in built.items():   # warm-up step (allocator, AdamW state)
        train_step(model, params, opt, batch)
    times = {name: [] for name in args.methods}
    for r in range(args.rounds):
        order = args.methods[r % len(args.methods):] + args.methods[:r % len(args.methods)]
        for name in order:
            model, params, opt, _ = built[name]
            t0 = time.perf_counter()
            train_step(model, params, opt, batch)
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) for n, t in times.items()}

    lora = med.get("lora")
    header = (f"{'method':<16} {'trainable':>10} {'step s':>7} {'spread':>6} {'tokens/s':>9} {'x lora time':>11} "
              f"{'RSS built MiB':>13} {'RSS peak MiB':>12} {'train MiB':>9} {'state MiB':>9}")
    print(header)
    print("-" * len(header))
    for name in args.methods:
        t = med[name]
        spread = (max(times[name]) - min(times[name])) / t
        m = mem.get(name)
        trainable = sum(p.numel() for p in built[name][1])
        memcols = (f"{m['built']:13.0f} {m['peak']:12.0f} {m['peak'] - m['built']:9.0f} {m['state'] / 2**20:9.1f}"
                   if m else f"{'-':>13} {'-':>12} {'-':>9} {'-':>9}")
        print(f"{name:<16} {trainable:>10,} {t:7.3f} {100 * spread:5.0f}% {BATCH * SEQ / t:9.0f} "
              f"{(t / lora if lora else float('nan')):11.3f} {memcols}")
    print()
    checks = []
    if "lora" in med and "peft-lora" in med:
        ratio = med["peft-lora"] / med["lora"]
        line = f"lora vs peft-lora: throughput ratio {ratio:.3f} (target >= 1.0)"
        if mem:
            line += (f"; train memory {mem['lora']['peak'] - mem['lora']['built']:.0f} vs "
                     f"{mem['peft-lora']['peak'] - mem['peft-lora']['built']:.0f} MiB (target: no more)")
        checks.append(line)
    if lora and "rosa-robust" in med:
        checks.append(f"rosa-robust r={RANK} d={100 * DENSITY:.1f}% vs lora: step time x{med['rosa-robust'] / lora:.3f} (target <= 1.25)")
    if lora and "rosa-orthogonal" in med:
        rs = built["rosa-orthogonal"][3]["resample_s"]
        checks.append(f"rosa-orthogonal r={RANK} vs lora between resamples: step time x{med['rosa-orthogonal'] / lora:.3f} "
                      f"(target <= 1.05); one resample of all {6 * 7} layers: {rs:.2f} s")
    for line in checks:
        print(line)
    print(f"spread = (max - min) / median over the rounds; total {time.time() - started:.0f} s")


if __name__ == "__main__":
    from record import recording
    with recording("training"):
        main()
