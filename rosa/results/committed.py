"""A grid's committed results: which cells are current, and committing a finished run's small files.

A grid in ``jobs.yaml`` with a ``results:`` folder (``mini``: ``docs/results/mini/grid``) keeps each
finished cell there, under the path its run folder has below the runs root::

    <results>/<dataset>/<method>/<readable name>-<identity hash>/
        config.yaml  status.json  metrics-<split>.json  predictions-<split>.jsonl  adapter/adapter.json
        machine.json

(the prompt field of the predictions is dropped: it is the data set's prompt for that id;
``machine.json`` names the CPU, its instruction set as torch dispatches it and the torch version of
the machine that committed the cell, the training machine under the serial launcher: bit-exact
reruns depend on them and on the thread count in ``config.yaml``). A cell is
*current* when its copy exists, holds its evaluation, and was trained from start to end by the
checkout's code (``rosa.provenance.same_code``: the fingerprint of the files that decide a run's
numbers, so a commit of results or docs keeps it). The config is in the folder's name: a changed
setting gives another identity hash, hence another cell. ``python -m rosa.jobs submit`` skips current
cells, runs the others from scratch (a run folder per code fingerprint, so a run of older code is
never resumed or reused) and commits each one as it finishes; the report reads only this folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rosa.atomic import replace_dir
from rosa.provenance import cpu_model, same_code

SMALL_FILES = ("config.yaml", "status.json")


def cell_path(results: Path, runs_root: Path, run_dir: Path) -> Path:
    return Path(results) / Path(run_dir).relative_to(runs_root)


def why_not_current(cell: Path, version: dict, split: str) -> str | None:
    """None when ``cell`` holds a finished, evaluated run trained by ``version``'s code; else why not."""
    cell = Path(cell)
    if not (cell / "status.json").exists():
        return "not committed"
    try:
        status = json.loads((cell / "status.json").read_text())
        metrics = json.loads((cell / f"metrics-{split}.json").read_text())
    except (OSError, ValueError) as err:
        return f"unreadable ({type(err).__name__}: {err})".splitlines()[0]
    if status.get("state") != "done":
        return f"committed in state {status.get('state')!r}"
    if not (
        same_code(status.get("trained_with"), version)
        and same_code(metrics.get("trained_with"), version)
        and same_code([metrics.get("code") or {}], version)
    ):  # trained, and evaluated, by this code
        trained = (
            ", ".join(
                f"{e.get('code')}" + ("+dirty" if e.get("dirty") else "") for e in status.get("trained_with") or []
            )
            or "unknown code"
        )
        return f"trained by code {trained}; the checkout's is {version.get('code')}"
    return None


def machine() -> dict:
    """What a bit-exact rerun depends on besides the code and the thread count."""
    import platform

    import torch

    return {
        "cpu": cpu_model(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def commit_cell(run_dir: Path, cell: Path) -> Path:
    """Copy a finished run's small files to ``cell``, replacing what is there whole
    (``rosa.atomic.replace_dir``)."""
    run_dir = Path(run_dir)

    def fill(staging: Path) -> None:
        staging.mkdir(parents=True)
        for name in SMALL_FILES:
            shutil.copyfile(run_dir / name, staging / name)
        for path in sorted(run_dir.glob("metrics-*.json")):
            shutil.copyfile(path, staging / path.name)
        for path in sorted(run_dir.glob("predictions-*.jsonl")):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            (staging / path.name).write_text(
                "".join(
                    json.dumps({k: v for k, v in row.items() if k != "prompt"}, ensure_ascii=False) + "\n"
                    for row in rows
                )
            )
        if (run_dir / "adapter" / "adapter.json").exists():  # the method's state: e.g. RoSA's real density
            (staging / "adapter").mkdir()
            shutil.copyfile(run_dir / "adapter" / "adapter.json", staging / "adapter" / "adapter.json")
        (staging / "machine.json").write_text(json.dumps(machine(), indent=2) + "\n")

    replace_dir(cell, fill)
    return Path(cell)
