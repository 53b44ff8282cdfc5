"""tracker=wandb: a real tiny run logs into W&B offline files (read back with rosa's reader of W&B's
record format) the same scalars at the same steps as TensorBoard, the same text samples, the final
numbers in the run's summary, the run config as the W&B config, under the run folder's name; a resume
goes on in the same W&B run id without a step twice; a restart from step 0 drops the earlier attempt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rosa.config import WandbConfig
from rosa.evaluation.load import read_run_config
from rosa.runs import update_status
from rosa.tracking import flat_hparams
from rosa.tracking.wandb_offline import FILE_HEADER, RUN_ID_KEY, WandbTracker, history_steps, read_records, run_files
from tests.tracking.logged import (
    STEPS,
    as_float32,
    status,
    tensorboard_scalars,
    tensorboard_texts,
    tracked_run,
    wandb_history,
    wandb_items,
    wandb_summary,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tracked_run(tmp_path_factory, "wandb")


def test_the_wandb_offline_run_holds_what_tensorboard_holds(run_dir):
    run_id = status(run_dir)[RUN_ID_KEY]
    training, evaluation = files = run_files(run_dir, run_id)  # one offline folder per process: train, eval
    assert all(path.parent.name.startswith("offline-run-") for path in files)
    (run,) = [record.run for record in read_records(training, "run")]
    assert run.run_id == run_id and run.display_name == run_dir.name and run.project == "rosa-harness"
    config = {k: v for k, v in wandb_items(run.config.update).items() if not k.startswith("_")}
    assert config == flat_hparams(read_run_config(run_dir))

    board = tensorboard_scalars(run_dir)
    logged = wandb_history(files)
    assert set(logged) == {tag for tag in board if tag.startswith(("train/", "val/"))} | {"val/sample"}
    assert set(logged["train/loss"]) == set(STEPS) and set(logged["val/loss"]) == {2, 4}
    for tag in set(logged) - {"val/sample"}:
        assert {step: as_float32(v) for step, v in logged[tag].items()} == board[tag], tag

    texts = tensorboard_texts(run_dir, "val/sample")
    assert set(logged["val/sample"]) == set(texts) == {2, 4}
    for step, table in logged["val/sample"].items():
        table_file = json.loads((training.parent / "files" / table["path"]).read_text())
        assert table_file["columns"] == ["text"] and table_file["data"] == [[texts[step]]]

    final = wandb_summary(files)  # the final numbers: the hyperparameters' metrics and the evaluation's
    finals = {tag for tag in board if tag.startswith(("hparam/", "eval/"))}
    assert {"hparam/val_loss", "eval/test/slot_f1"} <= finals
    for tag in finals:
        assert as_float32(final[tag]) == board[tag][0 if tag.startswith("hparam/") else STEPS[-1]], tag
    assert not wandb_history([evaluation])  # the evaluation's process logs no history row


def test_a_resume_goes_on_in_the_same_wandb_run_without_a_step_twice(tmp_path):
    cfg = WandbConfig(name="wandb", project="resumes", dir=None, mode="offline")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    update_status(run_dir, state="running")

    first = WandbTracker(cfg, run_dir, start=None, config={"train.lr": 0.1})
    for step in range(1, 6):  # killed after step 5; its last checkpoint is step 3's
        first.scalars(step, {"train/loss": float(step)})
    first.close(ok=False)
    run_id = status(run_dir)[RUN_ID_KEY]

    resumed = WandbTracker(cfg, run_dir, start=3, config={"train.lr": 0.1})
    assert status(run_dir)[RUN_ID_KEY] == run_id
    for step in range(4, 9):
        resumed.scalars(step, {"train/loss": 100.0 + step})
    resumed.text("val/sample", "a sample", 5)  # a step W&B holds: not logged again
    resumed.results(8, {"eval/test/bleu": 0.5})
    resumed.close()

    files = run_files(run_dir, run_id)
    assert len(files) == 2 and history_steps(run_dir, run_id) == list(range(1, 9))
    assert wandb_history(files) == {"train/loss": {**{s: s for s in range(1, 6)}, **{s: 100 + s for s in range(6, 9)}}}
    assert wandb_summary(files)["eval/test/bleu"] == 0.5

    again = WandbTracker(cfg, run_dir, start=None, config={})  # started again from step 0: a new id
    again.close()
    assert status(run_dir)[RUN_ID_KEY] != run_id and run_files(run_dir, run_id) == []


def test_a_torn_last_record_ends_the_reading(tmp_path):
    """A process killed while W&B wrote: the records before the torn one are read, nothing raises."""
    cfg = WandbConfig(name="wandb", project="torn", dir=str(tmp_path / "elsewhere"), mode="offline")
    (tmp_path / "run").mkdir()
    tracker = WandbTracker(cfg, tmp_path / "run", start=None, config={})
    for step in range(1, 4):
        tracker.scalars(step, {"train/loss": float(step)})
    tracker.close()
    (path,) = run_files(tmp_path / "elsewhere", status(tmp_path / "run")[RUN_ID_KEY])  # tracker.dir holds them
    whole = path.read_bytes()
    assert whole.startswith(FILE_HEADER) and wandb_history([path]) == {"train/loss": {1: 1, 2: 2, 3: 3}}
    records = len(list(read_records(path)))
    path.write_bytes(whole[:-3])  # the last record (W&B's exit record) cut short
    assert len(list(read_records(path))) == records - 1
    assert wandb_history([path]) == {"train/loss": {1: 1, 2: 2, 3: 3}}
    with pytest.raises(ValueError, match="not a W&B file"):
        list(read_records(Path(__file__)))


def test_run_files_are_a_runs_own_oldest_first_with_wandbs_same_second_suffix(tmp_path):
    names = [  # W&B adds -<n> to a folder name taken by a process of the same run in the same second
        "offline-run-20260101_000001-abc-2",
        "offline-run-20260101_000001-abc",
        "offline-run-20260101_000001-abc-10",
        "run-20260101_000000-abc",  # an online process's
        "offline-run-20260101_000000-abcd",  # another run's
        "offline-run-20260101_000000-xabc",
        "latest-run",  # W&B's link to the newest
    ]
    for name in names:
        (tmp_path / "wandb" / name).mkdir(parents=True)
        (tmp_path / "wandb" / name / "run-abc.wandb").touch()
    assert [path.parent.name for path in run_files(tmp_path, "abc")] == [
        "run-20260101_000000-abc",
        "offline-run-20260101_000001-abc",
        "offline-run-20260101_000001-abc-2",
        "offline-run-20260101_000001-abc-10",
    ]
