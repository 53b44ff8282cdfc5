"""The base model and a trained run side by side: ``python -m rosa.results.before_after runs/first-run``.

``make train`` trains the first-run preset (``conf/experiment/first-run.yaml``) twice: with
``train.max_steps=0`` (the untrained base model, evaluated the same way) and for real. This prints their
scores on the same test rows, one column each, and the first test prompt with both outputs, so the
first thing a newcomer sees is what training changed. The rows come from the run folders alone
(``compile.read_run``: config.yaml, status.json, metrics-<split>.json; predictions-<split>.jsonl); the
validation loss is status.json's ``final_val_loss``.
Exit status 2 when the folder does not hold one evaluated base run and one evaluated trained run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rosa.metrics import lower_is_better
from rosa.results.compile import BASE, metric_order, read_run
from rosa.runs import find_runs, recover_status


def first_prediction(run_dir: Path, split: str) -> dict | None:
    """The first row of the run's predictions file (None when there is none)."""
    try:
        with open(run_dir / f"predictions-{split}.jsonl", encoding="utf-8") as rows:
            return json.loads(next(rows))
    except (OSError, StopIteration, ValueError):
        return None


def before_after(root: Path, split: str = "test") -> str:
    """The report; ValueError (one line) unless ``root`` holds one evaluated base and one trained run."""
    rows = [read_run(run_dir, split) for run_dir in find_runs(root)]
    problems = [f"{r.path}: {r.problem}" for r in rows if r.problem]
    base = [r for r in rows if not r.problem and r.method == BASE]
    trained = [r for r in rows if not r.problem and r.method != BASE]
    if len(base) != 1 or len(trained) != 1:
        found = f"{len(base)} base and {len(trained)} trained evaluated run(s)"
        raise ValueError(f"{root}: {found}; needs one of each" + (f" ({problems[0]})" if problems else ""))
    (base,), (trained,) = base, trained
    status = {r.path: recover_status(r.path) or {} for r in (base, trained)}
    label = f"{trained.method} ({status[trained.path].get('steps')} steps)"
    width = max(len(label), 10)
    lines = [
        f"{trained.model} on {trained.dataset}, {split} split: the base model and the same model after training",
        f"{'metric':<12} {'base':>10} {label:>{width}}",
    ]
    scores = {r.path: {**r.metrics, "val_loss": status[r.path].get("final_val_loss")} for r in (base, trained)}
    for metric in [*metric_order(trained.dataset, [base, trained]), "val_loss"]:
        before, after = scores[base.path].get(metric), scores[trained.path].get(metric)
        if before is None or after is None:
            continue
        better = after < before if lower_is_better(metric) else after > before
        lines.append(f"{metric:<12} {before:>10.4g} {after:>{width}.4g}" + ("   better" if better else ""))
    sample_before, sample_after = first_prediction(base.path, split), first_prediction(trained.path, split)
    if sample_before and sample_after:
        lines += [
            "",
            f"prompt:    {sample_before['prompt']}",
            f"base:      {sample_before['prediction']!r}",
            f"trained:   {sample_after['prediction']!r}",
            f"reference: {sample_after['references'][0]!r}",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The base model's and a trained run's scores side by side.")
    parser.add_argument("path", help="a folder holding one base run (train.max_steps=0) and one trained run")
    parser.add_argument("--split", choices=["validation", "test"], default="test")
    args = parser.parse_args(argv)
    try:
        print(before_after(Path(args.path), args.split))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
