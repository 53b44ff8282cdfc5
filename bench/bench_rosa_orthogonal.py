"""Benchmark rosa-orthogonal (ROSA) against LoRA on CPU. This is a measurement script, not a test.

    python bench/bench_rosa_orthogonal.py [--threads 2] [--steps 6] [--skip-7b]

1. Training-step time between resamples: rosa-orthogonal vs LoRA at the same rank on the same model
   (a ~27M-parameter Llama config with the byte vocabulary). Target: ROSA / LoRA <= 1.05. Both
   compute W x + low-rank; the methods are measured in alternating rounds (median of each).
2. One resample (merge + float32 SVD of every adapted matrix) relative to one epoch of the tiny
   default run (e2e sample: 500 rows, batch 8 -> 63 steps), and GPT-2 S's 48 Conv1D SVDs
   (one SVD per distinct shape, times its count).
3. Llama-2-7B shapes: one 4096x4096 and one 4096x11008 float32 SVD, extrapolated to its 224 adapted
   matrices (per block: q, k, v, o 4096x4096; gate, up, down 4096x11008) -- an extrapolation, not a
   measurement of 224 SVDs. On a GPU the same SVDs are much faster; this is the CPU worst case.
   SVDs go through ``thin_svd`` (the method's path: a wide matrix is factored as its transpose).

Under ~3 minutes on 2 idle CPU cores; numbers move with other load on the machine (the load average
is printed with them). On a busy machine use ``--threads 1``: MKL's threads then stop spinning against
other processes (2 threads under a load of ~10 measured 5-15x slower than 1 thread here).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rosa.methods.base import StepContext  # noqa: E402
from rosa.methods.lora import LoRA  # noqa: E402
from rosa.methods.rosa_orthogonal import RosaOrthogonal, thin_svd  # noqa: E402
from rosa.training.optim import build_optimizer, rebuild_optimizer  # noqa: E402

TRAIN = SimpleNamespace(lr=2e-4, optimizer=SimpleNamespace(betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0))


def llama_27m():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=259,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def tiny():
    from rosa.models.tiny import tiny_model, tiny_tokenizer

    return tiny_model(tiny_tokenizer())


def setup(method, model):
    model = method.prepare(model)
    optimizer = build_optimizer(method.param_groups(model, TRAIN), TRAIN)
    ctx = StepContext(
        model=model, step=0, phase_step=0, epoch=0, steps_per_epoch=10**6, total_steps=10**6, micro_batches_per_step=1
    )
    if method.before_step(ctx):  # ROSA: the first sampling (not timed here)
        optimizer = rebuild_optimizer(optimizer, method.param_groups(model, TRAIN), TRAIN)
    model.train()
    return model, optimizer


def train_step(model, optimizer, ids) -> float:
    started = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def rosa_cfg(rank):
    return SimpleNamespace(
        name="rosa-orthogonal",
        rank=rank,
        selection="random-window",
        split="sqrt",
        resample_every="epoch",
        train_bias=True,
        target_modules="all-linear",
    )


def lora_cfg(rank):
    return SimpleNamespace(
        name="lora", rank=rank, alpha=2.0 * rank, dropout=0.0, rslora=False, target_modules="all-linear"
    )


def step_times(build, rank: int, batch: int, seq: int, steps: int) -> dict[str, float]:
    """Median step time of each method, measured in alternating rounds after one warm-up step."""
    runs = {
        "lora": setup(LoRA(lora_cfg(rank)), build()),
        "rosa-orthogonal": setup(RosaOrthogonal(rosa_cfg(rank)), build()),
    }
    ids = torch.randint(3, 259, (batch, seq), generator=torch.Generator().manual_seed(0))
    times = {name: [] for name in runs}
    for name, (model, opt) in runs.items():
        train_step(model, opt, ids)
    for _ in range(steps):
        for name, (model, opt) in runs.items():
            times[name].append(train_step(model, opt, ids))
    return {name: statistics.median(t) for name, t in times.items()}


def svd_seconds(m: int, n: int, repeats: int = 1) -> float:
    w = torch.randn(m, n, generator=torch.Generator().manual_seed(0))
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        thin_svd(w)  # what a resample runs (a wide matrix is factored as its transpose)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--steps", type=int, default=6, help="timed steps per method (model 1)")
    parser.add_argument("--skip-7b", action="store_true", help="skip the Llama-2-7B-shaped SVDs (the slow part)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[tuple[str, str, str]] = []
    print(
        f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.2f} at start", flush=True
    )

    # 1. step time between resamples
    rank = 8
    t = step_times(llama_27m, rank, batch=4, seq=128, steps=args.steps)
    rows.append(
        (
            "step time, llama-27M, r=8, batch 4x128",
            f"lora {t['lora'] * 1e3:.0f} ms, rosa {t['rosa-orthogonal'] * 1e3:.0f} ms",
            f"rosa/lora = {t['rosa-orthogonal'] / t['lora']:.3f} (target <= 1.05)",
        )
    )
    print(rows[-1], flush=True)
    t_tiny = step_times(tiny, rank, batch=8, seq=192, steps=2 * args.steps)
    rows.append(
        (
            "step time, tiny (1.9M), r=8, batch 8x192",
            f"lora {t_tiny['lora'] * 1e3:.1f} ms, rosa {t_tiny['rosa-orthogonal'] * 1e3:.1f} ms",
            f"rosa/lora = {t_tiny['rosa-orthogonal'] / t_tiny['lora']:.3f}",
        )
    )
    print(rows[-1], flush=True)

    # 2. one resample vs one epoch of the tiny default run (500 e2e sample rows, batch 8)
    method = RosaOrthogonal(rosa_cfg(rank))
    model, _ = setup(method, tiny())
    resample = min(method.resample(model, step) for step in (1, 2, 3))
    epoch = math.ceil(500 / 8) * t_tiny["rosa-orthogonal"]
    rows.append(
        (
            "one resample, tiny (28 matrices)",
            f"{resample * 1e3:.0f} ms vs epoch {epoch:.1f} s (63 steps)",
            f"resample/epoch = {resample / epoch:.4f}",
        )
    )
    print(rows[-1], flush=True)
    gpt2_s = {(768, 2304): 12, (768, 768): 12, (768, 3072): 12, (3072, 768): 12}  # [in, out] of the Conv1Ds
    total = sum(count * svd_seconds(m, n) for (m, n), count in gpt2_s.items())
    rows.append(
        (
            "one resample, GPT-2 S (48 Conv1D SVDs)",
            f"{total:.1f} s (one SVD per shape x 12)",
            f"vs paper's 332 s ROSA epoch (GPU) = {total / 332:.3f}",
        )
    )
    print(rows[-1], flush=True)

    # 3. Llama-2-7B shapes
    if not args.skip_7b:
        square = svd_seconds(4096, 4096)
        print(f"7B 4096x4096 SVD: {square:.1f} s", flush=True)
        wide = svd_seconds(4096, 11008)
        total = 128 * square + 96 * wide
        rows.append(("SVD 4096x4096 / 4096x11008 (fp32, CPU)", f"{square:.1f} s / {wide:.1f} s", "measured once each"))
        rows.append(
            (
                "one resample, Llama-2-7B (224 matrices)",
                f"~{total / 60:.0f} min = 128 x {square:.1f} + 96 x {wide:.1f} s",
                "EXTRAPOLATED, CPU; not measured",
            )
        )
        print(rows[-2:], flush=True)

    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(("what", "measured", "ratio"), width)))
    print("-+-".join("-" * w for w in width))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, width)))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import recording  # --record: write this output into docs/benchmarks.md

    with recording("rosa-orthogonal"):
        main()
