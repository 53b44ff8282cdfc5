"""What ``eval.py`` does: evaluate every run below a folder, one line per run, never stopping at one."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import torch

from rosa.runs import find_runs

log = logging.getLogger("rosa")


def export_merged(run_dir: Path, directory: Path, device: str | None = None, checkpoint: str = "last") -> int:
    """``eval.py <run> --export-merged DIR [--checkpoint best]``: the run's merged model as a plain HF checkpoint."""
    from rosa.evaluation.load import EvalError, load_run, save_merged

    if not (run_dir / "config.yaml").exists():
        print(
            f"error: --export-merged needs one run folder (holding config.yaml); {run_dir} is not one", file=sys.stderr
        )
        return 2
    try:
        loaded = load_run(run_dir, device, merge=True, checkpoint=checkpoint)
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not loaded.merged:
        print(f"error: {run_dir} cannot be exported merged: {loaded.merge_note}", file=sys.stderr)
        return 1
    try:
        save_merged(loaded.model, loaded.tokenizer, directory)
    except OSError as err:  # a full disk: one line, no half-written DIR (save_merged writes DIR.tmp first)
        print(f"error: {run_dir} cannot be exported: {err}", file=sys.stderr)
        return 1
    print(f"{run_dir}: merged model saved to {directory}")
    return 0


def evaluate_tree(root: Path, lm_eval=None, **options) -> int:
    """Evaluate the runs below ``root``: on their split, or with ``lm_eval`` (checked
    :class:`rosa.evaluation.lm_eval.Tasks`) on those lm-eval tasks instead. Exit status: 0, 1 if a run
    failed, 2 if there is no run."""
    if not root.exists():
        print(f"error: {root} does not exist", file=sys.stderr)
        return 2
    runs = find_runs(root)
    if not runs:
        print(f"error: no runs below {root} (a run is a folder holding config.yaml)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)

    from rosa.evaluation.runner import evaluate_run, summary_line

    if lm_eval is not None:
        from rosa.evaluation.lm_eval import evaluate_run_tasks, summary_lines

        evaluate = lambda run_dir, **kw: evaluate_run_tasks(run_dir, lm_eval, **kw)
        summary = summary_lines
    else:
        evaluate, summary = evaluate_run, lambda name, result: [summary_line(name, result)]

    counts = {"evaluated": 0, "skipped": 0, "failed": 0}
    for run_dir in runs:
        name = str(run_dir)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the previous run's model is gone
        try:
            result = evaluate(run_dir, **options)
        except Exception as err:  # report, go on with the other runs
            counts["failed"] += 1
            message = f"{type(err).__name__}: {err}".splitlines()[0]
            print(f"{name}: FAILED {message}", file=sys.stderr)
            log.debug("".join(traceback.format_exception(err)))
            continue
        counts[result["state"]] += 1
        if result["state"] == "skipped":
            print(f"{name}: skipped ({result['reason']})")
        else:
            print("\n".join(summary(name, result)))
            if not result.get("merged"):
                print(f"{name}: generated unmerged ({result.get('merge_note')})")
    print(
        f"{len(runs)} run(s): {counts['evaluated']} evaluated, {counts['skipped']} skipped, {counts['failed']} failed",
        file=sys.stderr,
    )
    return 1 if counts["failed"] else 0
