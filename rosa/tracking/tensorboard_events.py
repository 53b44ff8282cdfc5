"""TensorBoard event files in the run folder: every run writes them (``figures.py`` reads them).

A fresh run drops an earlier attempt's files; a resumed one purges the steps after its checkpoint
(``purge_step``), so no step shows twice. The evaluation's metrics go to a new event file beside the
training's, at the run's last step.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rosa.tracking.base import Tracker

log = logging.getLogger("rosa")


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path, start: int | None):
        from torch.utils.tensorboard import SummaryWriter

        if start is None:
            clean_tensorboard(run_dir)
        self.writer = SummaryWriter(
            log_dir=str(run_dir), purge_step=None if start is None else start + 1, flush_secs=15
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def results(self, step: int, values: dict[str, float]) -> None:
        self.scalars(step, values)

    def hparams(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        self.writer.add_hparams(hparams, metrics, run_name=".")  # the hparams plugin has no step

    def close(self, ok: bool = True) -> None:
        self.writer.close()  # a second close does nothing


def clean_tensorboard(run_dir: Path) -> None:
    """A run that starts from step 0 drops the events of an earlier attempt (killed before its first
    checkpoint), so TensorBoard shows no step twice; a resume purges the steps after its checkpoint."""
    stale = list(Path(run_dir).glob("events.out.tfevents.*"))
    for path in stale:
        path.unlink()
    if stale:
        log.info("removed %d TensorBoard event file(s) of an earlier attempt (the run starts from step 0)", len(stale))
