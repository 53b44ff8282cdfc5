"""``tracker=mlflow``: the run's numbers in an MLflow run, by default in a local file store (offline).

One MLflow run per run folder, named after it, in the experiment ``tracker.experiment``; its id is
kept in the run's ``status.json`` (``mlflow_run_id``), so a resume and a later evaluation log into the
same MLflow run. A run that starts again from step 0 deletes the run of its earlier attempt (MLflow's
delete: ``mlflow gc`` removes it for good) and opens a new one.

MLflow keeps every value it is given, so after a resume a metric is logged only at steps after the
last one the MLflow run already holds for it: the steps between the checkpoint and the kill were
logged by the killed attempt, with the same losses (a resume reproduces them), and are not logged
twice. The evaluation's metrics are logged at the run's last step whatever it holds (a re-evaluation
adds a newer value there, which MLflow shows as the latest). Parameters (the flat run config) are
logged once, at the end; MLflow does not let a parameter change.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from rosa.runs import read_status, update_status
from rosa.tracking.base import Tracker

log = logging.getLogger("rosa")
RUN_ID_KEY = "mlflow_run_id"  # in status.json


def tracking_uri(value: str) -> str:
    """A folder (no ``scheme://``) as its absolute ``file://`` URI; any other URI as it is."""
    return value if "://" in value else Path(value).expanduser().resolve().as_uri()


class MlflowTracker(Tracker):
    def __init__(self, cfg, run_dir: Path, start: int | None):
        self.uri = tracking_uri(cfg.tracking_uri)
        if self.uri.startswith("file:"):
            # MLflow 3.x refuses its file store unless this is set (the store is in maintenance mode;
            # MLflow asks for a database). A local folder is what works offline with mlflow-skinny
            # (a sqlite store needs SQLAlchemy), so we opt in for our own use (docs: README, Tracking).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_dir, self.closed = Path(run_dir), False
        stored = (read_status(run_dir) or {}).get(RUN_ID_KEY)
        existing = self._existing(stored)
        if start is None and existing is not None:  # an earlier attempt that never reached a checkpoint
            self.client.delete_run(stored)
            log.info("deleted the MLflow run %s of an earlier attempt (the run starts from step 0)", stored)
            existing = None
        if existing is None:
            if stored and start is not None:
                log.warning("MLflow run %s is not in %s: the run goes on in a new MLflow run", stored, self.uri)
            created = self.client.create_run(self._experiment_id(cfg.experiment), run_name=self.run_dir.name)
            self.run_id = created.info.run_id
            update_status(run_dir, **{RUN_ID_KEY: self.run_id})
            self.held: dict[str, int] = {}
        else:
            self.run_id = stored
            self.client.update_run(stored, status="RUNNING")
            self.held = {  # the last step of each metric the MLflow run holds
                key: max(m.step for m in self.client.get_metric_history(stored, key)) for key in existing.data.metrics
            }

    def _existing(self, run_id: str | None):
        """The MLflow run ``run_id`` when this store holds it (not deleted), else None."""
        from mlflow.exceptions import MlflowException

        if not run_id:
            return None
        try:
            found = self.client.get_run(run_id)
        except MlflowException:
            return None
        return found if found.info.lifecycle_stage == "active" else None

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created meanwhile by another run of a sweep
            return self.client.get_experiment_by_name(name).experiment_id

    def _log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._log(step, {k: v for k, v in values.items() if step > self.held.get(k, -1)})

    def text(self, tag: str, text: str, step: int) -> None:
        self.client.log_text(self.run_id, text, f"{tag}/step-{step}.txt")  # an artifact: logged again, replaced

    def results(self, step: int, values: dict[str, float]) -> None:
        self._log(step, values)

    def hparams(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        logged = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in hparams.items() if k not in logged]
        self.client.log_batch(self.run_id, params=new)
        self._log(step, metrics)

    def close(self, ok: bool = True) -> None:
        if not self.closed:
            self.closed = True
            self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")
