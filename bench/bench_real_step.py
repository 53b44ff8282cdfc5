"""Step time and peak memory of one training step on the real model (SmolLM2-135M, real ViGGO rows),
with the LM head over every position (before) and only over labelled positions (after).

Each (method, head) case runs in its own process, so its peak RSS is its own; the cases therefore run
one after another, not interleaved (a change of the machine's load between cases enters the ratios;
the header says so). The harness's Trainer
is built as ``train.py`` builds it, then ``--steps`` optimizer steps of ``--batch`` examples are
timed after one warm-up step (median reported). spa and rosa-robust choose their masks at step 0
(mask_criterion=random) and rosa-orthogonal samples once at step 0, so the timed steps are their
steady state (mask collection and resampling are measured elsewhere).

    python bench/bench_real_step.py [--methods fft lora spa rosa-robust rosa-orthogonal] [--batch 8]
                                    [--steps 2] [--threads 2] [--record]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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


def one_case(method: str, head: str, batch: int, steps: int, threads: int) -> dict:
    from omegaconf import OmegaConf

    from rosa.config import compose, validate
    from rosa.training import loop

    if head == "full":
        loop.token_loss_sum = full_head_loss
    steady = {"spa": ["fnmodel.mask_criterion=random"], "rosa-robust": ["fnmodel.mask_criterion=random"],
              "rosa-orthogonal": ["fnmodel.resample_every=never"]}   # steady state: masks / subspace chosen at step 0
    overrides = ["model=smollm2-135m", f"fnmodel={method}", *steady.get(method, []), "dataset=viggo", "dataset.source=local",
                 f"dataset.path={DATA}", f"train.batch_size={batch}", f"train.micro_batch_size={batch}",
                 f"threads={threads}", "train.max_steps=100"]
    run = validate(compose(overrides))
    trainer = loop.Trainer(run, Path(tempfile.mkdtemp()))
    times = []
    for i in range(steps + 1):
        started = time.perf_counter()
        stats = trainer.train_step()
        trainer.phase_step += 1
        if i:
            times.append(time.perf_counter() - started)
    return {"method": method, "head": head, "step_s": statistics.median(times), "loss": stats["loss"],
            "tokens": stats["tokens"], "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["fft", "lora", "spa", "rosa-robust", "rosa-orthogonal"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(one_case(*args.case, args.batch, args.steps, args.threads)))
        return
    started = time.perf_counter()
    print(f"SmolLM2-135M, fp32, ViGGO batch {args.batch}, {args.threads} threads, median of {args.steps} steps "
          f"after a warm-up, load average {os.getloadavg()[0]:.1f} at start; cases run one after another, each "
          f"in its own process (its own peak RSS), not interleaved", flush=True)
    print(f"{'method':<16} {'head':<9} {'step s':>7} {'peak RSS GiB':>13} {'loss':>8}")
    results = {}
    for method in args.methods:
        for head in ("full", "labelled"):
            out = subprocess.run([sys.executable, __file__, "--case", method, head, "--batch", str(args.batch),
                                  "--steps", str(args.steps), "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True, cwd=ROOT).stdout
            r = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
            results[method, head] = r
            print(f"{method:<16} {head:<9} {r['step_s']:7.2f} {r['peak_rss_gib']:13.2f} {r['loss']:8.4f}", flush=True)
    for method in args.methods:
        full, labelled = results[method, "full"], results[method, "labelled"]
        print(f"{method}: labelled-positions head {full['step_s'] / labelled['step_s']:.2f}x faster, "
              f"peak RSS {full['peak_rss_gib']:.2f} -> {labelled['peak_rss_gib']:.2f} GiB")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    from record import recording
    with recording("real-step"):
        main()
