"""The run's tracker through the run's lifecycle (in-process, the tiny model): a run killed after
step 5 (its last checkpoint step 4's) and resumed shows each step once in TensorBoard, MLflow and W&B
alike, with the same losses; the killed attempt's tracker was closed as failed."""

from __future__ import annotations

import pytest

from rosa.tracking.mlflow_store import RUN_ID_KEY as MLFLOW_ID
from rosa.tracking.wandb_offline import RUN_ID_KEY as WANDB_ID
from rosa.tracking.wandb_offline import read_records, run_files
from tests.tracking.logged import as_float32, mlflow_client, mlflow_history, status, tensorboard_scalars, wandb_history
from tests.training.faults import Killed, die_before_step, train

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = list(range(1, 7))  # faults.FAST trains 6 steps, a checkpoint every 2


def logged_losses(tracker: str, run_dir) -> dict[str, dict[int, float]]:
    """``train/loss`` and ``val/loss`` as the run's MLflow or W&B run holds them (a step twice fails)."""
    if tracker == "mlflow":
        client, run_id = mlflow_client(run_dir.parents[2] / "mlruns"), status(run_dir)[MLFLOW_ID]
        out = {tag: mlflow_history(client, run_id, tag) for tag in ("train/loss", "val/loss")}
        assert all(len({s for s, _ in points}) == len(points) for points in out.values()), out
        return {tag: dict(points) for tag, points in out.items()}
    history = wandb_history(run_files(run_dir, status(run_dir)[WANDB_ID]))
    return {tag: history[tag] for tag in ("train/loss", "val/loss")}


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_killed_then_resumed_run_shows_each_step_once_in_every_tracker(tmp_path, monkeypatch, tracker):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    overrides = (f"tracker={tracker}", "train.eval_every=2")
    with monkeypatch.context() as killing:
        die_before_step(killing, 6)  # steps 1-5 logged; step 5 is after the last checkpoint
        with pytest.raises(Killed):
            train(tmp_path, *overrides)
    code, run_dir = train(tmp_path, *overrides)
    assert code == 0

    board = tensorboard_scalars(run_dir)
    assert sorted(board["train/loss"]) == STEPS  # TensorBoard purged step 5 and logged it again
    logged = logged_losses(tracker, run_dir)
    assert sorted(logged["train/loss"]) == STEPS and sorted(logged["val/loss"]) == [2, 4, 6]
    for tag, points in logged.items():  # step 5's loss: the killed attempt's, equal to the resumed one
        assert {step: as_float32(v) for step, v in points.items()} == board[tag], tag

    if tracker == "mlflow":
        assert (
            mlflow_client(run_dir.parents[2] / "mlruns").get_run(status(run_dir)[MLFLOW_ID]).info.status == "FINISHED"
        )
    else:
        killed, resumed = run_files(run_dir, status(run_dir)[WANDB_ID])
        assert [r.exit.exit_code for r in read_records(killed, "exit")] == [1]  # closed as failed
        assert [r.history.step.num for r in read_records(resumed, "history")] == [6]
