"""Where does rosa-robust's and rosa-orthogonal's extra step time go? (CPU, bench_training's toy model,
data, batch and step.) Three parts, one run:

1. Step time, median of interleaved rounds (one step of each case per round, order rotated): lora,
   spa and rosa-robust with the sparse path of before the fix (``impl=torch``: MKL CSR SpMM + SDDMM,
   what ``auto`` meant on CPU) and after it (``impl=auto``: W0 + S materialised, one matmul, on CPU),
   rosa-orthogonal.
2. torch.profiler over 2 steps per case, the cases one after another: time per phase (forward /
   backward / optimizer, from record_function labels; data is pre-built and mask bookkeeping has no
   per-step work after the masks exist) and the top operators by self CPU time.
3. The pieces of the sparse path on one 1376 x 512 layer (the toy's MLP up-projection), 2048 tokens,
   d = 0.6 %, interleaved rounds: the dense base matmul, MKL's CSR SpMM alone and with the add of its
   transposed output, materialising W0 + S, and the SDDMM on g's transposed view and on a contiguous copy.

With ``--model smollm2-135m`` (SmolLM2-135M, ``--batch`` real ViGGO rows, bench_training's data):
lora at dropout 0 (its plain path), lora at its default dropout and rosa-robust; part 2 also gives
each operator's share of the step and each case's model FLOP utilisation (bench/flops.py); no part 3.

    python bench/profile_training.py [--model toy|smollm2-135m] [--batch 8] [--rounds 5] [--threads 1] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_training as bt  # noqa: E402

REAL_CASES = [("lora", None, ("fnmodel.dropout=0",)), ("lora", None, ()), ("rosa-robust", None, ())]
CASES = [
    ("lora", None),
    ("spa", "torch"),
    ("spa", None),
    ("rosa-robust", "torch"),
    ("rosa-robust", None),
    ("rosa-orthogonal", None),
]
PHASES = ("forward", "backward", "optimizer")


def label(name, impl, extra=()):
    if extra:
        return f"{name} [{' '.join(o.removeprefix('fnmodel.') for o in extra)}]"
    return f"{name} [{impl or 'auto'}]" if name in ("spa", "rosa-robust") else name


def labelled_step(model, params, optimizer, batch):
    from rosa.training.loop import token_loss_sum

    model.train()
    with record_function("forward"):
        loss_sum, n = token_loss_sum(model, batch)
        loss = loss_sum / max(n, 1)
    with record_function("backward"):
        loss.backward()
    with record_function("optimizer"):
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def interleaved(cases: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each case over ``rounds`` rounds (each runs every case once, the order rotated
    by one each round), after one warm-up call of each."""
    for fn in cases.values():
        fn()
    names, times = list(cases), {k: [] for k in cases}
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            cases[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def piece_costs(rounds: int, n: int = 1376, m: int = 512, tokens: int = 2048, density: float = 0.006) -> None:
    """Part 3: the primitives of the sparse path (torch.sparse on CPU = MKL) against the dense matmul."""
    gen = torch.Generator().manual_seed(0)
    x, g = torch.randn(tokens, m, generator=gen), torch.randn(tokens, n, generator=gen)
    w0 = torch.randn(n, m, generator=gen) * 0.02
    nnz = int(density * n * m)
    flat = torch.randperm(n * m, generator=gen)[:nnz].sort().values
    rows, cols = flat // m, (flat % m).to(torch.int32)
    crow = torch.zeros(n + 1, dtype=torch.int32)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    values = torch.randn(nnz, generator=gen) * 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        S = torch.sparse_csr_tensor(crow, cols, values, (n, m))
        mask = torch.sparse_csr_tensor(crow, cols, torch.zeros(nnz), (n, m))
    y = x @ w0.t()
    cases = {
        "dense base matmul x W0^T (the unavoidable part)": lambda: x @ w0.t(),
        "MKL CSR SpMM S x^T": lambda: S @ x.t(),
        "the same, plus adding its transposed output to y": lambda: y + (S @ x.t()).t(),
        "materialising W0 + S (copy W0, index_add the values)": lambda: w0.flatten().index_add(0, flat, values),
        "SDDMM sampled_addmm(mask, g^T, x), g's transposed view": lambda: torch.sparse.sampled_addmm(
            mask, g.t(), x, beta=0.0
        ),
        "the same with g^T made contiguous first": lambda: torch.sparse.sampled_addmm(
            mask, g.t().contiguous(), x, beta=0.0
        ),
    }
    med = interleaved(cases, rounds)
    dense = med["dense base matmul x W0^T (the unavoidable part)"]
    spmm = med["MKL CSR SpMM S x^T"]
    print(
        f"\n3. one {n} x {m} layer, {tokens} tokens, d = {density:.1%} ({nnz:,} nonzeros), median of {rounds} "
        f"interleaved rounds"
    )
    print(f"{'operation':<58} {'ms':>8} {'x dense':>8}")
    for k, t in med.items():
        print(f"{k:<58} {t * 1e3:8.2f} {t / dense:8.3f}")
    print(
        f"MKL CSR SpMM: {nnz * tokens / 1e6:.1f}M multiply-adds at {2 * nnz * tokens / spmm / 1e9:.2f} GFLOP/s; "
        f"the dense matmul: {2 * n * m * tokens / dense / 1e9:.1f} GFLOP/s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared machine, OpenMP barriers stall 2-thread steps unpredictably)",
    )
    ap.add_argument("--top", type=int, default=6)
    ap.add_argument("--model", choices=["toy", "smollm2-135m"], default="toy")
    ap.add_argument("--batch", type=int, default=8, help="ViGGO rows per step (smollm2-135m)")
    ap.add_argument("--piece-rounds", type=int, default=20, help="rounds of part 3")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    bt.SETTINGS.update(model=args.model, batch=args.batch)
    batch = bt.make_batch()
    n_params = sum(p.numel() for p in bt.build_model().parameters())
    print(
        f"bench_training's {args.model} model ({n_params / 1e6:.1f}M parameters, fp32), {bt.describe_batch(batch)}, "
        f"{args.threads} threads, load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    cases = CASES if args.model == "toy" else REAL_CASES
    built = {label(*c): bt.build(*c) for c in cases}
    names = list(built)
    med = interleaved({k: (lambda b=built[k]: bt.train_step(b[0], b[1], b[2], batch)) for k in names}, args.rounds)
    print(
        f"\n1. step time, median of {args.rounds} rounds, the cases interleaved (one step of each per round, "
        f"order rotated)"
    )
    from flops import matmul_rate, step_flops

    rate = matmul_rate(built[names[0]][0], batch)
    print(f"{'case':<24} {'step s':>7} {'x lora':>7} {'GFLOP':>6} {'MFU':>5}")
    for k in names:
        f = step_flops(built[k][0], batch)["total"]
        print(f"{k:<24} {med[k]:7.3f} {med[k] / med['lora']:7.3f} {f / 1e9:6.0f} {100 * f / med[k] / rate:4.0f}%")
    print(
        f"MFU: model FLOPs (bench/flops.py) / step s / the core's fp32 torch.mm rate on the model's matmul "
        f"shapes, {rate / 1e9:.1f} GFLOP/s here"
    )

    print(
        "\n2. torch.profiler, 2 steps of each case, the cases one after another (not interleaved): seconds per "
        "step by phase, then top operators (self CPU)"
    )
    for k in names:
        model, params, opt, _ = built[k]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                labelled_step(model, params, opt, batch)
        events = prof.key_averages()
        phase = {e.key: e.cpu_time_total / 2e6 for e in events if e.key in PHASES}
        ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
        total = sum(phase.values())
        print(f"{k}: " + ", ".join(f"{p} {phase.get(p, 0):.3f}" for p in PHASES) + f" (sum {total:.3f} s)")
        for e in ops[: args.top]:
            print(
                f"    {e.key[:50]:<50} {e.self_cpu_time_total / 2e6:7.3f} s/step {100 * e.self_cpu_time_total / 2e6 / total:5.1f}%"
                f"  {e.count // 2:>5} calls/step"
            )
    if args.model == "toy":
        piece_costs(args.piece_rounds)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    from record import recording

    real = "--model" in sys.argv and sys.argv[sys.argv.index("--model") + 1] != "toy"
    with recording("profile-training-smollm2-135m" if real else "profile-training"):
        main()
