"""Where a run's numbers go: one small interface, TensorBoard behind it.

The loop hands a :class:`Tracker` the scalars of each logged step (``train/loss``, ``train/lr``, ...),
each validation's (``val/loss``, ``val/ppl``), an optional text sample, and at the end the run's
hyperparameters with its final metrics. :func:`open_tracker` gives the run's: TensorBoard event files
in the run folder on rank 0 (a fresh run drops an earlier attempt's files; a resumed one purges the
steps after its checkpoint, so no step shows twice), nothing on the other ranks.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from rosa.runs import flat_keys

log = logging.getLogger("rosa")


class Tracker:
    """Accepts everything, records nothing (the other ranks of a distributed job; tests)."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def text(self, tag: str, text: str, step: int) -> None:
        pass

    def hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path, resumed_at: int | None):
        from torch.utils.tensorboard import SummaryWriter

        if resumed_at is None:
            clean_tensorboard(run_dir)
        self.writer = SummaryWriter(
            log_dir=str(run_dir), purge_step=None if resumed_at is None else resumed_at + 1, flush_secs=15
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        self.writer.add_hparams(hparams, metrics, run_name=".")

    def close(self) -> None:
        self.writer.close()


def open_tracker(run_dir: Path, resumed_at: int | None, main: bool) -> Tracker:
    """The run's tracker: TensorBoard on rank 0 (``resumed_at``: the step a resume starts from)."""
    return TensorBoardTracker(run_dir, resumed_at) if main else Tracker()


def flat_hparams(run) -> dict:
    """The run config as one level of ``section.key`` names (TensorBoard's hparams take scalars)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat_keys(asdict(run)).items()}


def clean_tensorboard(run_dir: Path) -> None:
    """A run that starts from step 0 drops the events of an earlier attempt (killed before its first
    checkpoint), so TensorBoard shows no step twice; a resume purges the steps after its checkpoint."""
    stale = list(Path(run_dir).glob("events.out.tfevents.*"))
    for path in stale:
        path.unlink()
    if stale:
        log.info("removed %d TensorBoard event file(s) of an earlier attempt (the run starts from step 0)", len(stale))
