"""Training throughput and peak memory per method on one CPU model, versus HF PEFT's LoRA.

Two models (``--model``):
  smollm2-135m  the real pretrained SmolLM2-135M (model=smollm2-135m, 134.5M parameters, tied
                head, vocab 49,152), fp32; data: the first ``--batch`` (default 4) training rows of
                the real ViGGO CSV (../shared/data/viggo), tokenised by the harness (loss on the
                target only, ~15% of the tokens, as in fine-tuning).
  toy           a Llama of ~27M parameters from a LlamaConfig (hidden 512, 6 layers, intermediate
                1376, 8 heads, vocab 8000, untied head), random init (seed 0), fp32; data: random
                token ids, micro-batch 8 x 256 tokens, every token a target.
Methods (all adapters on every linear layer but the head, the same modules for ours and PEFT):

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

Model FLOP utilisation (MFU, bench/flops.py): each method's model FLOPs of one step, counted from the
model's shapes (the blocks' matmuls, the adapters' own products, attention's two products over the
full L x L, the LM head at the labelled positions; forward and backward; padding included), over
its median step time, over the core's fp32 torch.mm rate on the model's own matmul shapes measured
in the same run (same thread count).

Peak memory: each method first in a fresh subprocess (same model, data, step) reading VmHWM,
the process's resident high-water mark (/proc/self/status; ru_maxrss as a fallback): after building the model ("built") and after
3 steps ("peak"); "train" = peak - built is what training adds (activations, grads, AdamW state,
method buffers). Exact tensor accounting of trainable state is printed too (params + grads + AdamW
moments, bytes).

    python bench/bench_training.py [--model smollm2-135m|toy] [--rounds 9] [--threads 1] [--record]
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
ARCH = dict(
    vocab_size=8000,
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=8,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)
RANK, DENSITY = 16, 0.006
VIGGO = ROOT.parent / "shared" / "data" / "viggo"
SETTINGS = {"model": "smollm2-135m", "batch": 4}  # set from the command line (and passed to the children)


def model_overrides() -> list[str]:
    if SETTINGS["model"] == "toy":
        return []
    return ["model=smollm2-135m", "dataset=viggo", "dataset.source=local", f"dataset.path={VIGGO}"]


def build_model():
    torch.manual_seed(0)
    if SETTINGS["model"] == "toy":
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(**ARCH, attn_implementation="sdpa")).float()
    from rosa.config import compose, validate
    from rosa.models import load_model, load_tokenizer

    run = validate(compose(model_overrides()))
    return load_model(run.model, load_tokenizer(run.model))


def adapted_module_names(model) -> list[str]:
    """The modules of ``model`` our methods adapt (fnmodel.target_modules=all-linear), handed to PEFT."""
    from rosa.config import compose, validate
    from rosa.methods.base import find_target_modules

    run = validate(compose(["fnmodel=lora", *model_overrides()]))
    return find_target_modules(model, run.fnmodel.target_modules)


def build(name: str, impl: str | None = None, extra_overrides: tuple[str, ...] = ()):
    """(model, trainable params, optimizer, per-method extra info) for one method; ``impl`` overrides
    fnmodel.impl of spa / rosa-robust (default: the config's, auto); ``extra_overrides``: more config
    overrides of our methods (e.g. ``fnmodel.dropout=0``)."""
    model = build_model()
    extra = {}
    if name == "peft-lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=RANK,
                lora_alpha=16,
                lora_dropout=0.05,
                target_modules=adapted_module_names(model),
                task_type="CAUSAL_LM",
            ),
        )
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": 1e-4}]
    else:
        from rosa.config import compose, validate
        from rosa.methods import StepContext, get_method

        overrides = {
            "fft": [],
            "lora": [f"fnmodel.rank={RANK}"],
            "spa": [f"fnmodel.density={DENSITY}", "fnmodel.mask_criterion=random"],
            "rosa-robust": [f"fnmodel.rank={RANK}", f"fnmodel.density={DENSITY}", "fnmodel.mask_criterion=random"],
            "rosa-orthogonal": [f"fnmodel.rank={RANK}", "fnmodel.resample_every=never"],
        }[name]
        if impl:
            overrides.append(f"fnmodel.impl={impl}")
        overrides += list(extra_overrides)
        run = validate(compose([f"fnmodel={name}", "device=cpu", "precision=fp32", *model_overrides(), *overrides]))
        method = get_method(run.fnmodel, seed=0)
        model = method.prepare(model)
        if name == "rosa-orthogonal":  # the first sampling, as the loop's first before_step does
            ctx = StepContext(
                model=model, step=0, phase_step=0, epoch=0, steps_per_epoch=1, total_steps=1, micro_batches_per_step=1
            )
            method.before_step(ctx)
            extra["resample_s"] = method.resample(model, 1)  # one more, timed: merge + SVD of every layer
        groups = method.param_groups(model, argparse.Namespace(lr=1e-4))
        extra["describe"] = method.describe()
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=1e-4)
    return model, params, optimizer, extra


def make_batch() -> dict:
    if SETTINGS["model"] == "toy":
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, ARCH["vocab_size"], (8, 256), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    from rosa.config import compose, validate
    from rosa.data import build_train_features, collate_batch, get_spec, load_examples
    from rosa.models import load_tokenizer

    run = validate(compose(model_overrides()))
    tokenizer = load_tokenizer(run.model)
    examples, _ = load_examples(run.dataset, "train")
    features, _ = build_train_features(
        examples[: SETTINGS["batch"]], tokenizer, get_spec("viggo"), run.dataset.max_length
    )
    return collate_batch(features, tokenizer.pad_token_id)


def describe_batch(batch: dict) -> str:
    ids, labels = batch["input_ids"], batch["labels"]
    return (
        f"micro-batch {ids.shape[0]} x {ids.shape[1]} tokens ({int(batch['attention_mask'].sum())} real, "
        f"{int((labels != -100).sum())} with loss)"
    )


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
    total = sum(2 * p.numel() * p.element_size() for p in params)  # parameter + gradient
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
    print(
        json.dumps(
            {
                "built": built,
                "peak": maxrss_mib(),
                "state": state_bytes(params, optimizer),
                "trainable": sum(p.numel() for p in params),
            }
        )
    )


def measure_memory(name: str, threads: int) -> dict:
    env = dict(os.environ, BENCH_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, "--model", SETTINGS["model"], "--batch", str(SETTINGS["batch"])],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def paired(times: dict[str, list[float]], name: str, reference: str) -> tuple[float, float, float]:
    """Median, min and max over rounds of time[name] / time[reference] within the same round: the
    two steps ran back to back, so a slow patch of the machine cancels out of the ratio."""
    ratios = [a / b for a, b in zip(times[name], times[reference])]
    return statistics.median(ratios), min(ratios), max(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["smollm2-135m", "toy"], default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4, help="ViGGO rows per step (smollm2-135m)")
    ap.add_argument("--rounds", type=int, default=9, help="timed steps per method (interleaved rounds)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared machine, OpenMP barriers stall 2-thread steps unpredictably)",
    )
    ap.add_argument("--methods", nargs="*", default=METHODS)
    ap.add_argument("--no-memory", action="store_true", help="skip the per-method subprocess memory runs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    SETTINGS.update(model=args.model, batch=args.batch)
    if args.child:
        return child(args.child, 3)
    torch.set_num_threads(args.threads)
    batch = make_batch()
    n_params = sum(p.numel() for p in build_model().parameters())
    print(
        f"{args.model}: {n_params / 1e6:.1f}M parameters, fp32, {describe_batch(batch)}, {args.threads} "
        f"threads; AdamW; step times: methods interleaved over {args.rounds} rounds (one step of each per round, "
        f"order rotated) in one process; memory: each method in its own process, one after another; "
        f"load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    started = time.time()
    # memory first, each method in a fresh subprocess, while this process is still small
    mem = {} if args.no_memory else {n: measure_memory(n, args.threads) for n in args.methods}
    built = {name: build(name) for name in args.methods}
    for name, (model, params, opt, _) in built.items():  # warm-up step (allocator, AdamW state)
        train_step(model, params, opt, batch)
    times = {name: [] for name in args.methods}
    for r in range(args.rounds):
        order = args.methods[r % len(args.methods) :] + args.methods[: r % len(args.methods)]
        for name in order:
            model, params, opt, _ = built[name]
            t0 = time.perf_counter()
            train_step(model, params, opt, batch)
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) for n, t in times.items()}
    tokens = int(batch["attention_mask"].sum())
    from flops import matmul_rate, step_flops

    rate = matmul_rate(built[args.methods[0]][0], batch)
    model_flops = {name: step_flops(built[name][0], batch)["total"] for name in args.methods}

    reference = "lora" if "lora" in med else None
    header = (
        f"{'method':<16} {'trainable':>11} {'step s':>7} {'spread':>6} {'tokens/s':>9} {'x lora (min-max)':>20} "
        f"{'GFLOP':>6} {'MFU':>5} {'RSS built MiB':>13} {'RSS peak MiB':>12} {'train MiB':>9} {'state MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in args.methods:
        t = med[name]
        spread = (max(times[name]) - min(times[name])) / t
        m = mem.get(name)
        trainable = sum(p.numel() for p in built[name][1])
        ratio = "{:.3f} ({:.3f}-{:.3f})".format(*paired(times, name, reference)) if reference else "-"
        memcols = (
            f"{m['built']:13.0f} {m['peak']:12.0f} {m['peak'] - m['built']:9.0f} {m['state'] / 2**20:9.1f}"
            if m
            else f"{'-':>13} {'-':>12} {'-':>9} {'-':>9}"
        )
        mfu = model_flops[name] / t / rate
        print(
            f"{name:<16} {trainable:>11,} {t:7.3f} {100 * spread:5.0f}% {tokens / t:9.0f} {ratio:>20} "
            f"{model_flops[name] / 1e9:6.0f} {100 * mfu:4.0f}% {memcols}"
        )
    print()
    targets = {
        "peft-lora": "lora tokens/s / peft-lora tokens/s (target >= 1.05)",
        "rosa-robust": f"rosa-robust r={RANK} d={100 * DENSITY:.1f}% step time / lora (target <= 1.15)",
        "rosa-orthogonal": f"rosa-orthogonal r={RANK} step time / lora between resamples (target <= 1.0)",
    }
    for name, what in targets.items():
        if reference and name in med:
            print(
                f"{what}: median {{:.3f}}, min {{:.3f}}, max {{:.3f}} over {args.rounds} paired rounds".format(
                    *paired(times, name, reference)
                )
            )
    if mem and "peft-lora" in mem and "lora" in mem:
        print(
            f"train memory lora {mem['lora']['peak'] - mem['lora']['built']:.0f} MiB vs peft-lora "
            f"{mem['peft-lora']['peak'] - mem['peft-lora']['built']:.0f} MiB (target: no more)"
        )
    if "rosa-orthogonal" in built:
        from rosa.methods.base import adapted_layers

        n_layers = len(adapted_layers(built["rosa-orthogonal"][0]))
        print(
            f"one resample of {n_layers} rosa-orthogonal layers: {built['rosa-orthogonal'][3]['resample_s']:.2f} s "
            f"(a lora step: {med.get('lora', float('nan')):.2f} s)"
        )
    print(
        f"GFLOP = model FLOPs of one step (bench/flops.py); MFU = GFLOP / step s / the core's fp32 torch.mm "
        f"rate on the model's matmul shapes, measured here: {rate / 1e9:.1f} GFLOP/s ({args.threads} threads)"
    )
    print(
        f"spread = (max - min) / median over the rounds; x lora = per-round ratio to the lora step of the same "
        f"round; total {time.time() - started:.0f} s"
    )


if __name__ == "__main__":
    from record import recording

    model = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else "smollm2-135m"
    with recording("training" if model == "toy" else f"training-{model}"):
        main()
