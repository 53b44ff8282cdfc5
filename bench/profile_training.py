"""Where does rosa-robust's and rosa-orthogonal's extra step time go? (CPU, bench_training's model,
data, batch and step.) Two parts, one run:

1. Step time, median of interleaved rounds: lora, spa and rosa-robust with the sparse path of
   before the fix (``impl=torch``: MKL CSR SpMM + SDDMM, what ``auto`` meant on CPU) and after it
   (``impl=auto``: W0 + S materialised, one matmul, on CPU), rosa-orthogonal.
2. torch.profiler over 2 steps per method: time per phase (forward / backward / optimizer, from
   record_function labels; data is pre-built and mask bookkeeping has no per-step work after the
   masks exist) and the top operators by self CPU time.

    python bench/profile_training.py [--rounds 5] [--threads 2] [--record]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_training as bt  # noqa: E402

CASES = [("lora", None), ("spa", "torch"), ("spa", None), ("rosa-robust", "torch"), ("rosa-robust", None),
         ("rosa-orthogonal", None)]
PHASES = ("forward", "backward", "optimizer")


def label(name, impl):
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--top", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch = bt.make_batch()
    print(f"bench_training's model and batch ({bt.BATCH} x {bt.SEQ} tokens, fp32), {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
    built = {label(*c): bt.build(*c) for c in CASES}
    for model, params, opt, _ in built.values():
        bt.train_step(model, params, opt, batch)
    times = {k: [] for k in built}
    names = list(built)
    for r in range(args.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            model, params, opt, _ = built[k]
            t0 = time.perf_counter()
            bt.train_step(model, params, opt, batch)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n1. step time, median of {args.rounds} interleaved rounds")
    print(f"{'case':<24} {'step s':>7} {'x lora':>7}")
    for k in names:
        print(f"{k:<24} {med[k]:7.3f} {med[k] / med['lora']:7.3f}")

    print("\n2. torch.profiler, 2 steps each: seconds per step by phase, then top operators (self CPU)")
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
        for e in ops[:args.top]:
            print(f"    {e.key:<34} {e.self_cpu_time_total / 2e6:7.3f} s/step  {e.count // 2:>5} calls/step")


if __name__ == "__main__":
    from record import recording
    with recording("profile-training"):
        main()
