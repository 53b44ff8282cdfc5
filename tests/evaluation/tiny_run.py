"""One tiny trained run per test session, shared by the evaluation and results tests.

``trained_runs(tmp_path_factory)`` trains it once (3 LoRA steps on the built-in tiny model and the
E2E sample, in a subprocess) and returns its output folder; ``copy_runs(dest)`` gives a test its
own copy, since evaluation writes into the run folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import run_train

_CACHE: dict[str, Path] = {}
TRAIN_OVERRIDES = (
    "train.max_steps=3",
    "dataset.sample_rows.train=32",
    "dataset.sample_rows.validation=8",
    "dataset.sample_rows.test=8",
    "train.eval_at_end=false",
)


def trained_runs(tmp_path_factory) -> Path:
    """The output folder (``<out>/e2e/lora/<run>``) of the session's one trained run."""
    if "root" not in _CACHE:
        root = tmp_path_factory.mktemp("tiny-trained") / "runs"
        result = run_train(*TRAIN_OVERRIDES, f"output.path={root}", env={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-2000:]
        _CACHE["root"] = root
    return _CACHE["root"]


def copy_runs(tmp_path_factory, dest: Path) -> Path:
    """A private copy of the trained runs tree at ``dest``; returns ``dest``."""
    shutil.copytree(trained_runs(tmp_path_factory), dest)
    return dest


def only_run(root: Path) -> Path:
    (run,) = [p.parent for p in Path(root).rglob("config.yaml")]
    return run
