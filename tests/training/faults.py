"""Helpers of the fault tests: a tiny in-process run and a deterministic "kill" at a chosen step."""

from __future__ import annotations

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
