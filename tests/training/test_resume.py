"""Runs: a finished run is skipped, a killed run resumes with the same per-step losses as an
uninterrupted one, TensorBoard shows no duplicated steps, and a NaN loss fails the run cleanly."""

import json
import signal

import pytest

from tests.conftest import run_train

SMALL = [
    "train.max_steps=8",
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "train.checkpoint_every=2",
    "dataset.sample_rows.train=48",
    "dataset.sample_rows.validation=8",
    "dataset.max_length=96",
    "train.eval_at_end=false",
    "train.sample_at_eval=false",
    "fnmodel.dropout=0.1",
]


def only_run(root):
    runs = [p.parent for p in root.rglob("config.yaml")]
    assert len(runs) == 1, runs
    return runs[0]


def final_history(run_dir):
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    return json.loads((run_dir / "checkpoints" / latest["path"] / "state.json").read_text())["history"]


def tensorboard_steps(run_dir, tag="train/loss"):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    result = run_train(*SMALL, f"output.path={root}")
    assert result.returncode == 0, result.stderr[-2000:]
    return only_run(root)


def test_rerun_of_finished_run_is_skipped(uninterrupted):
    result = run_train(*SMALL, f"output.path={uninterrupted.parents[2]}")
    assert result.returncode == 0
    assert "already done" in result.stdout


def test_sigkill_then_rerun_resumes_with_equal_losses(tmp_path, uninterrupted):
    root = tmp_path / "runs"
    # the run sends itself SIGKILL at the end of step 5, before that step's checkpoint: step 4's is the last
    killed = run_train(*SMALL, f"output.path={root}", env={"ROSA_TEST_SIGNAL_AT_STEP": "5:SIGKILL"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = only_run(root)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"
    killed_at = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"]
    assert killed_at == 4

    result = run_train(*SMALL, f"output.path={root}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stderr
    resumed, straight = final_history(run_dir), final_history(uninterrupted)
    assert [h["step"] for h in resumed] == list(range(1, 9))
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight]
    assert sorted(set(tensorboard_steps(run_dir))) == tensorboard_steps(run_dir) == list(range(1, 9))


def test_nan_loss_fails_the_run_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    from rosa.config import compose, validate
    from rosa.training import lifecycle, loop

    real = loop.token_loss_sum
    calls = {"n": 0}

    def poisoned(model, batch, **kwargs):
        loss, n = real(model, batch, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 6 else loss), n  # steps 1-3 fine (2 micro-batches each)

    monkeypatch.setattr(loop, "token_loss_sum", poisoned)
    run = validate(compose([*SMALL, f"output.path={tmp_path}"]))
    with pytest.raises(loop.TrainingFailed, match="loss is nan at step 4"):
        lifecycle.train(run, "config: test\n")
    run_dir = only_run(tmp_path)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "loss is nan at step 4" in status["error"]
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"] == 2
