"""Where a run's numbers go: one small interface, TensorBoard always, MLflow or W&B as well (a leaf).

The loop hands a :class:`Tracker` the scalars of each logged step (``train/loss``, ``train/lr``, ...),
each validation's (``val/loss``, ``val/ppl``), an optional text sample, and at the end the run's
hyperparameters with its final metrics; the evaluation hands it its metrics (``eval/<split>/<metric>``,
at the run's last step). :func:`open_tracker` gives the run's, on rank 0 (nothing on the other ranks):

* TensorBoard event files in the run folder, whatever ``tracker`` says: ``figures.py`` and
  ``tensorboard --logdir`` read them (``tensorboard_events.py``);
* ``tracker=mlflow``: the same numbers in an MLflow run (``mlflow_store.py``: a local file store by
  default); ``tracker=wandb``: in a W&B run, offline by default (``wandb_offline.py``). Each run folder
  keeps its MLflow or W&B run id in ``status.json``, so a resume or an evaluation goes on in that run.

A run that starts again from step 0 (killed before its first checkpoint) drops what an earlier attempt
recorded; a resume goes on from its checkpoint's step without showing a step twice: TensorBoard purges
the steps after the checkpoint and logs them again; MLflow and W&B keep what they hold and skip a step
they already have (the resumed losses are the same: only timings would differ).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rosa.runs import flat_keys
from rosa.tracking.base import Tracker, Trackers

__all__ = ["Tracker", "Trackers", "flat_hparams", "open_tracker"]


def open_tracker(run, run_dir: Path, start: int | None, main: bool = True) -> Tracker:
    """The run's tracker (``run``: its RunConfig). ``start``: None for a run that starts from step 0
    (an earlier attempt's records are dropped), else the step it goes on from (a resume: its
    checkpoint's step; an evaluation: the run's last step)."""
    if not main:
        return Tracker()
    from rosa.tracking.tensorboard_events import TensorBoardTracker

    events = TensorBoardTracker(run_dir, start)
    if run.tracker.name == "mlflow":
        from rosa.tracking.mlflow_store import MlflowTracker

        return Trackers(events, MlflowTracker(run.tracker, run_dir, start))
    if run.tracker.name == "wandb":
        from rosa.tracking.wandb_offline import WandbTracker

        return Trackers(events, WandbTracker(run.tracker, run_dir, start, flat_hparams(run)))
    return events


def flat_hparams(run) -> dict:
    """The run config as one level of ``section.key`` names (TensorBoard's hparams take scalars)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat_keys(asdict(run)).items()}
