"""tracker=mlflow: a real tiny run logs into a local MLflow file store the same scalars at the same
steps as TensorBoard, the same text samples, the run config as parameters, under the run folder's
name; a resume goes on in the same MLflow run without logging a step twice; a restart from step 0
replaces the earlier attempt's MLflow run."""

from __future__ import annotations

from pathlib import Path

import pytest

from rosa.config import MlflowConfig
from rosa.evaluation.load import read_run_config
from rosa.runs import update_status
from rosa.tracking import flat_hparams
from rosa.tracking.mlflow_store import RUN_ID_KEY, MlflowTracker
from tests.tracking.logged import (
    STEPS,
    as_float32,
    mlflow_client,
    mlflow_history,
    status,
    tensorboard_scalars,
    tensorboard_texts,
    tracked_run,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tracked_run(tmp_path_factory, "mlflow")


@pytest.fixture(autouse=True)
def file_store_allowed(monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file store without it


def test_the_mlflow_run_holds_what_tensorboard_holds(run_dir):
    client = mlflow_client(run_dir.parents[2] / "mlruns")  # the default store: ${output.path}/mlruns
    run = client.get_run(status(run_dir)[RUN_ID_KEY])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "rosa-harness"

    board = tensorboard_scalars(run_dir)
    assert set(run.data.metrics) == set(board)
    assert {"train/loss", "val/loss", "eval/test/slot_f1", "hparam/val_loss"} <= set(board)
    assert set(board["train/loss"]) == set(STEPS) and set(board["val/loss"]) == {2, 4}
    for tag, points in board.items():
        logged = mlflow_history(client, run.info.run_id, tag)
        if tag.startswith("hparam/"):  # TensorBoard's hparams plugin puts them at step 0; MLflow at the last step
            assert [(step, as_float32(v)) for step, v in logged] == [(STEPS[-1], points[0])], tag
        else:
            assert [(step, as_float32(v)) for step, v in logged] == sorted(points.items()), tag

    texts = tensorboard_texts(run_dir, "val/sample")
    assert set(texts) == {2, 4}
    for step, text in texts.items():
        assert Path(client.download_artifacts(run.info.run_id, f"val/sample/step-{step}.txt")).read_text() == text

    assert run.data.params == {k: str(v) for k, v in flat_hparams(read_run_config(run_dir)).items()}
    assert run.data.params["tracker.name"] == "mlflow" and run.data.params["train.max_steps"] == "4"


def test_a_resume_goes_on_in_the_same_mlflow_run_without_a_step_twice(tmp_path):
    cfg = MlflowConfig(name="mlflow", tracking_uri=str(tmp_path / "mlruns"), experiment="resumes")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    update_status(run_dir, state="running")

    first = MlflowTracker(cfg, run_dir, start=None)
    for step in range(1, 6):  # killed after step 5; its last checkpoint is step 3's
        first.scalars(step, {"train/loss": float(step)})
    first.close(ok=False)
    run_id = status(run_dir)[RUN_ID_KEY]

    resumed = MlflowTracker(cfg, run_dir, start=3)
    assert status(run_dir)[RUN_ID_KEY] == run_id
    for step in range(4, 9):
        resumed.scalars(step, {"train/loss": 100.0 + step, "train/new": 1.0})
    resumed.results(8, {"eval/test/bleu": 0.5})
    resumed.results(8, {"eval/test/bleu": 0.25})  # a re-evaluation at a step MLflow holds is logged too
    resumed.close()

    client = mlflow_client(tmp_path / "mlruns")
    assert mlflow_history(client, run_id, "train/loss") == [(s, float(s)) for s in range(1, 6)] + [
        (s, 100.0 + s) for s in range(6, 9)
    ]
    assert [s for s, _ in mlflow_history(client, run_id, "train/new")] == [
        4,
        5,
        6,
        7,
        8,
    ]  # a new tag starts where it is
    assert mlflow_history(client, run_id, "eval/test/bleu") == [(8, 0.25), (8, 0.5)]
    assert client.get_run(run_id).info.status == "FINISHED"

    again = MlflowTracker(cfg, run_dir, start=None)  # started again from step 0: the old MLflow run goes
    again.close()
    assert status(run_dir)[RUN_ID_KEY] != run_id
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
