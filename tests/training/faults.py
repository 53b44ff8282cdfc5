"""Helpers of the fault tests: a tiny in-process run, a deterministic "kill" at a chosen step, and a
crafted sequence of validation losses for the best adapter and early stopping (tests/training/test_best.py)."""

from __future__ import annotations

import math
from pathlib import Path

from rosa.config import compose, validate
from rosa.runs import run_dir_for
from rosa.training import checkpoint, lifecycle, loop

FAST = [
    "train.max_steps=6",
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "train.checkpoint_every=2",
    "dataset.sample_rows.train=16",
    "dataset.sample_rows.validation=4",
    "train.eval_at_end=false",
    "train.sample_at_eval=false",
    "train.eval_batches=1",
    "threads=1",
]


class Killed(BaseException):
    """Like SIGKILL: not an Exception, so the run is not marked failed and nothing is cleaned up."""


def config(root: Path, *overrides: str):
    return validate(compose([*FAST, *overrides, f"output.path={root}"]))


def config_yaml(root: Path, *overrides: str) -> str:
    """The config.yaml train.py would store for this run (a resume compares it with the command's)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(compose([*FAST, *overrides, f"output.path={root}"]), resolve=True)


def train(root: Path, *overrides: str) -> tuple[int, Path]:
    run = config(root, *overrides)
    return lifecycle.train(run, config_yaml(root, *overrides)), run_dir_for(run)


def die_before_step(monkeypatch, step: int) -> None:
    """Make the in-process loop raise ``Killed`` when it starts ``step`` (its checkpoints before stay)."""
    real = loop.Trainer.train_step

    def step_or_die(self):
        if self.step + 1 == step:
            raise Killed(step)
        return real(self)

    monkeypatch.setattr(loop.Trainer, "train_step", step_or_die)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a resume would take (``latest.json``'s, else the newest complete one)."""
    found = checkpoint.checkpoints(run_dir)
    return found[0] if found else None


def history(checkpoint: Path) -> list[float]:
    import json

    return [h["loss"] for h in json.loads((checkpoint / "state.json").read_text())["history"]]


# validation losses by step: step 4 is the best (3.98; by less than min_delta 0.05 below step 2's 4.0),
# step 5 the third validation in a row without an improvement by more than 0.05: patience 3 stops there.
# Later steps (4.3) are reached only when the early stop fails.
CRAFTED = {1: 5.0, 2: 4.0, 3: 4.5, 4: 3.98, 5: 4.2}
SELECTED = [
    "train.max_steps=10",
    "train.eval_every=1",
    "train.checkpoint_every=3",
    "train.keep_best=val_loss",
    "train.early_stop={patience: 3, min_delta: 0.05}",
]


def crafted_validation(monkeypatch) -> None:
    """Make the loop's validation loss ``CRAFTED``'s value of the step (4.3 after step 5)."""

    def validation_loss(self):
        loss = CRAFTED.get(self.step, 4.3)
        return {"loss": loss, "ppl": math.exp(loss)}

    monkeypatch.setattr(loop.Trainer, "validation_loss", validation_loss)
