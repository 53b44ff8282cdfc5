"""Step time and peak memory of one training step on the real model (SmolLM2-135M, real ViGGO rows),
with the LM head over every position (before) and only over labelled positions (after).

Each method runs in its own process (methods one after another): the harness's Trainer is built as
``train.py`` builds it, one warm-up step is taken with each head, then ``--steps`` rounds each run one
optimizer step of ``--batch`` examples with each head, in an order rotated each round (interleaved:
a change of the machine's load hits both heads alike), median reported. Peak RSS per head: the
process's resident high-water mark (VmHWM) during that head's timed steps, reset before each step
(``/proc/self/clear_refs``), so both heads are measured in the same process over the same model and
optimizer state. spa and rosa-robust choose their masks at step 0 (mask_criterion=random) and
rosa-orthogonal samples once at step 0, so the timed steps are their steady state (mask collection
and resampling are measured elsewhere). Both heads train the same model in turn, so their losses are
not compared here (``tests/models/test_loss.py`` checks they are equal).

    python bench/bench_real_step.py [--methods fft lora spa rosa-robust rosa-orthogonal] [--batch 8]
                                    [--steps 2] [--threads 2] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "viggo"


def full_head_loss(model, batch):
    """The loss as it was before: logits at every position, then the masked cross-entropy."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")
    return loss, int((labels != -100).sum())


def high_water_gib() -> float:
    """This process's resident high-water mark since the last ``reset_high_water``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status: peak RSS per head needs Linux")


def reset_high_water() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM restarts from the current RSS


def one_method(method: str, batch: int, steps: int, threads: int) -> dict:
    from rosa.config import compose, validate
    from rosa.training import loop

    heads = {"full": full_head_loss, "labelled": loop.token_loss_sum}
    steady = {
        "spa": ["fnmodel.mask_criterion=random"],
        "rosa-robust": ["fnmodel.mask_criterion=random"],
        "rosa-orthogonal": ["fnmodel.resample_every=never"],
    }  # steady state: masks / subspace chosen at step 0
    overrides = [
        "model=smollm2-135m",
        f"fnmodel={method}",
        *steady.get(method, []),
        "dataset=viggo",
        "dataset.source=local",
        f"dataset.path={DATA}",
        f"train.batch_size={batch}",
        f"train.micro_batch_size={batch}",
        f"threads={threads}",
        "train.max_steps=100",
        "train.shared_prefix=off",
    ]  # the heads alone (bench_shared_prefix.py measures the prefix)
    run = validate(compose(overrides))
    trainer = loop.Trainer(run, Path(tempfile.mkdtemp()))

    def step(head: str) -> dict:
        loop.token_loss_sum = heads[head]  # the loop looks the loss function up at each call
        stats = trainer.train_step()
        trainer.phase_step += 1
        return stats

    for head in heads:  # warm-up: masks / subspace, AdamW state, allocator
        step(head)
    names = list(heads)
    times, peaks = {h: [] for h in names}, {h: 0.0 for h in names}
    for r in range(steps):
        for head in names[r % 2 :] + names[: r % 2]:
            reset_high_water()
            started = time.perf_counter()
            step(head)
            times[head].append(time.perf_counter() - started)
            peaks[head] = max(peaks[head], high_water_gib())
    return {h: {"step_s": statistics.median(times[h]), "peak_rss_gib": peaks[h]} for h in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["fft", "lora", "spa", "rosa-robust", "rosa-orthogonal"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="rounds: timed steps per head")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one method, print JSON
    args = ap.parse_args()
    if args.method:
        print("RESULT " + json.dumps(one_method(args.method, args.batch, args.steps, args.threads)))
        return
    started = time.perf_counter()
    print(
        f"SmolLM2-135M, fp32, ViGGO batch {args.batch}, {args.threads} threads, load average "
        f"{os.getloadavg()[0]:.1f} at start; in each method's process the two heads are interleaved over "
        f"{args.steps} rounds (one step of each per round, order rotated) after a warm-up step of each, "
        f"median; methods one after another, each in its own process; peak RSS = VmHWM during the head's "
        f"steps (reset before each step)",
        flush=True,
    )
    print(f"{'method':<16} {'head':<9} {'step s':>7} {'peak RSS GiB':>13}")
    results = {}
    for method in args.methods:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--method",
                method,
                "--batch",
                str(args.batch),
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
        results[method] = r = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
        for head in ("full", "labelled"):
            print(f"{method:<16} {head:<9} {r[head]['step_s']:7.2f} {r[head]['peak_rss_gib']:13.2f}", flush=True)
    for method, r in results.items():
        full, labelled = r["full"], r["labelled"]
        print(
            f"{method}: labelled-positions head {full['step_s'] / labelled['step_s']:.2f}x faster, "
            f"peak RSS {full['peak_rss_gib']:.2f} -> {labelled['peak_rss_gib']:.2f} GiB"
        )
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    from record import recording

    with recording("real-step"):
        main()
