"""The best adapter (train.keep_best) and early stopping (train.early_stop) in tiny in-process runs.

Most runs here see a crafted sequence of validation losses (``faults.CRAFTED``, by step), so the best step,
the patience counter and the early stop are known in advance: step 4 is the best (3.98, which beats
step 2's 4.0 by less than min_delta 0.05, so the counter goes on), and the third validation in a row
without an improvement by more than 0.05, step 5, stops the run. Killed runs (``faults.Killed``, like
SIGKILL: nothing is cleaned up) are resumed and must end exactly as the uninterrupted one: best value,
best step, patience counter, stop, and the best and final adapters bit for bit. One run stops early on
its own validation loss, which stops moving at a learning rate of 1e-9.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from safetensors.torch import load_file

from rosa.runs import read_status, run_dir_for
from rosa.training import lifecycle, loop
from tests.training import faults
from tests.training.test_resume import tensorboard_steps


def tensors(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter.safetensors"))


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def final_state(run_dir) -> dict:
    return json.loads((faults.latest_checkpoint(run_dir) / "state.json").read_text())


def outcome(run_dir) -> dict:
    """What must come back exactly after a kill and a resume."""
    status = read_status(run_dir)
    state = final_state(run_dir)
    return {
        "status": {k: status.get(k) for k in ("state", "steps", "total_steps", "best_step", "best_value")},
        "stopped_early": status.get("stopped_early"),
        "record": json.loads((run_dir / "best" / "best-record.json").read_text()),
        "best_so_far": state["best_so_far"],
        "losses": [h["loss"] for h in state["history"]],
        "validated": [h["step"] for h in state["val_history"]],
    }


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run of the crafted sequence."""
    root = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as monkeypatch:
        faults.crafted_validation(monkeypatch)
        # train.log's lines, as train.py; setLevel (not the attribute) also clears the logger's cached
        # isEnabledFor answers, which an earlier test's INFO line may have left False
        rosa_log = logging.getLogger("rosa")
        level = rosa_log.level
        rosa_log.setLevel(logging.INFO)
        try:
            code, run_dir = faults.train(root, *faults.SELECTED)
        finally:
            rosa_log.setLevel(level)
    assert code == 0
    return run_dir


def test_the_best_adapter_and_its_step_are_kept_and_the_run_stops_early(straight):
    seen = outcome(straight)
    assert seen["status"] == {"state": "done", "steps": 5, "total_steps": 10, "best_step": 4, "best_value": 3.98}
    assert seen["stopped_early"]["step"] == 5
    assert "val_loss has not improved by more than 0.05 in 3 validation(s)" in seen["stopped_early"]["reason"]
    assert seen["record"] == {"best_step": 4, "best_metric": "val_loss", "best_value": 3.98, "best_is": "min"}
    assert seen["best_so_far"]["bad_validations"] == 3 and seen["validated"] == [1, 2, 3, 4, 5]
    assert len(seen["losses"]) == 5  # trained 5 of the planned 10 steps
    # <run>/best is the adapter of step 4 (its checkpoint is kept as the one before the last), the
    # final adapter that of step 5, where the run stopped
    checkpoints = straight / "checkpoints"
    assert same_tensors(tensors(straight / "best"), tensors(checkpoints / "step-0000004"))
    assert same_tensors(tensors(straight / "adapter"), tensors(checkpoints / "step-0000005"))
    assert not same_tensors(tensors(straight / "best"), tensors(straight / "adapter"))
    record = json.loads((straight / "adapter" / "run-record.json").read_text())
    assert record["best_step"] == 4 and record["stopped_early"]["step"] == 5
    assert "early stop at step 5 of 10: val_loss has not improved" in (straight / "train.log").read_text()


def kill_before_step_4(monkeypatch) -> None:
    """After step 3's checkpoint, whose patience counter is 1: the resume must take it from there."""
    faults.die_before_step(monkeypatch, 4)


def kill_between_checkpoint_and_best(monkeypatch) -> None:
    """Step 4's checkpoint records the new best, <run>/best still holds step 2's adapter."""
    real = loop.Trainer.save_best

    def save_best(self):
        if self.step == 4:
            raise faults.Killed(4)
        real(self)

    monkeypatch.setattr(loop.Trainer, "save_best", save_best)


def kill_after_the_early_stop(monkeypatch) -> None:
    """The run stopped at step 5 (its checkpoint says so) and is killed before the final adapter."""

    def save_adapter(trainer, summary):
        raise faults.Killed(trainer.step)

    monkeypatch.setattr(lifecycle, "_save_adapter", save_adapter)


@pytest.mark.parametrize(
    "kill, killed_at, bad_validations",
    [(kill_before_step_4, 3, 1), (kill_between_checkpoint_and_best, 4, 2), (kill_after_the_early_stop, 5, 3)],
)
def test_a_killed_run_resumes_to_the_same_best_and_stop(straight, tmp_path, kill, killed_at, bad_validations):
    with pytest.MonkeyPatch.context() as monkeypatch:
        faults.crafted_validation(monkeypatch)
        with pytest.MonkeyPatch.context() as killing:
            kill(killing)
            with pytest.raises(faults.Killed):
                faults.train(tmp_path, *faults.SELECTED)
        run_dir = run_dir_for(faults.config(tmp_path, *faults.SELECTED))
        state = final_state(run_dir)
        assert state["step"] == killed_at and state["best_so_far"]["bad_validations"] == bad_validations
        if kill is kill_between_checkpoint_and_best:  # the checkpoint is ahead of <run>/best
            assert state["best_so_far"]["best_step"] == 4
            assert json.loads((run_dir / "best" / "best-record.json").read_text())["best_step"] == 2
        code, resumed = faults.train(tmp_path, *faults.SELECTED)
    assert code == 0 and resumed == run_dir
    assert outcome(resumed) == outcome(straight)
    assert same_tensors(tensors(resumed / "best"), tensors(straight / "best"))
    assert same_tensors(tensors(resumed / "adapter"), tensors(straight / "adapter"))


def test_early_stop_ends_a_run_whose_validation_loss_stops_improving(tmp_path):
    """No crafted numbers: at lr 1e-9 the validation loss moves by far less than min_delta 0.001."""
    stop = [
        "train.lr=1e-9",
        "train.max_steps=12",
        "train.eval_every=2",
        "train.early_stop={patience: 2, min_delta: 0.001}",
    ]
    code, run_dir = faults.train(tmp_path, *stop)
    assert code == 0
    status = read_status(run_dir)
    assert (status["state"], status["steps"], status["total_steps"]) == ("done", 6, 12)
    assert status["stopped_early"]["step"] == 6 and status["best_step"] == 2
    losses = [h["loss"] for h in final_state(run_dir)["val_history"]]
    assert len(losses) == 3 and max(losses) - min(losses) < 0.001
    assert not (run_dir / "best").exists()  # early stop alone keeps no best adapter
    assert (run_dir / "adapter" / "adapter.safetensors").exists()


def test_a_task_metric_is_generated_at_each_validation_without_changing_training(tmp_path):
    """keep_best by a metric of the dataset: scored on generations for eval_limit validation prompts at
    every validation; generating does not touch the training's RNG (adapter dropout), so the per-step
    losses stay those of the same run without it."""
    common = [
        "dataset=viggo",
        "fnmodel.dropout=0.1",
        "train.max_steps=2",
        "train.eval_every=1",
        "eval.max_new_tokens=4",
    ]
    code, plain = faults.train(tmp_path / "plain", *common)
    assert code == 0
    code, run_dir = faults.train(tmp_path / "best", *common, "train.keep_best=slot_f1", "train.eval_limit=2")
    assert code == 0 and run_dir.name == plain.name  # keep_best does not change the run's identity
    assert tensorboard_steps(run_dir, "val/slot_f1") == tensorboard_steps(run_dir, "val/loss") == [1, 2]
    assert [h["loss"] for h in final_state(run_dir)["history"]] == [h["loss"] for h in final_state(plain)["history"]]
    record = json.loads((run_dir / "best" / "best-record.json").read_text())
    assert (record["best_metric"], record["best_is"]) == ("slot_f1", "max") and record["best_step"] in (1, 2)
    assert read_status(run_dir)["best_value"] == record["best_value"]


def test_a_new_best_at_the_final_validation_is_checkpointed_and_survives_a_kill(tmp_path):
    """The final validation comes after the last step's checkpoint: a new best there saves that step's
    checkpoint again (recording it; the one before stays the fallback), then <run>/best. Killed in
    between, the resume validates nothing again and writes <run>/best from the checkpoint."""
    final_best = ["train.max_steps=4", "train.eval_every=2", "train.checkpoint_every=2", "train.keep_best=val_loss"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        faults.crafted_validation(monkeypatch)  # step 2: 4.0, step 4 (the final validation): 3.98
        code, straight = faults.train(tmp_path / "straight", *final_best)
        assert code == 0
        with pytest.MonkeyPatch.context() as killing:
            kill_between_checkpoint_and_best(killing)
            with pytest.raises(faults.Killed):
                faults.train(tmp_path / "killed", *final_best)
        code, resumed = faults.train(tmp_path / "killed", *final_best)
    assert code == 0
    assert sorted(p.name for p in (straight / "checkpoints").glob("step-*")) == ["step-0000002", "step-0000004"]
    state = final_state(straight)
    assert [h["step"] for h in state["val_history"]] == [2, 4] and state["best_so_far"]["best_step"] == 4
    assert same_tensors(tensors(straight / "best"), tensors(straight / "adapter"))
    assert outcome(resumed) == outcome(straight) and read_status(resumed)["best_step"] == 4
    assert same_tensors(tensors(resumed / "best"), tensors(straight / "best"))


def test_a_language_modelling_perplexity_is_the_validation_losss(tmp_path):
    """ELI5's bits_per_token (the ROSA paper's number) comes from the validation loss itself: the same
    blocks, nothing generated; minimised."""
    code, run_dir = faults.train(
        tmp_path, "dataset=eli5", "train.max_steps=2", "train.eval_every=1", "train.keep_best=bits_per_token"
    )
    assert code == 0
    validations = final_state(run_dir)["val_history"]
    assert [h["step"] for h in validations] == [1, 2]
    assert all(h["bits_per_token"] == pytest.approx(h["loss"] / math.log(2), rel=1e-12) for h in validations)
    best = min(validations, key=lambda h: h["loss"])
    record = json.loads((run_dir / "best" / "best-record.json").read_text())
    assert record == {
        "best_step": best["step"],
        "best_metric": "bits_per_token",
        "best_value": best["bits_per_token"],
        "best_is": "min",
    }


def test_a_restart_starts_the_best_afresh(tmp_path, monkeypatch):
    """RoSA's restart trains over from the pretrained weights: a best from the warm-up before it (here
    the lowest validation loss of the run) does not count; the best is the restarted run's."""

    def validation_loss(self):  # phase_step falls behind step at the restart
        loss = 1.0 if self.phase_step == self.step else 5.0 - 0.1 * self.step
        return {"loss": loss, "ppl": math.exp(loss)}

    monkeypatch.setattr(loop.Trainer, "validation_loss", validation_loss)
    robust = ["fnmodel=rosa-robust", "fnmodel.warmup_steps=2", "fnmodel.density=0.05", "fnmodel.rank=4"]
    code, run_dir = faults.train(
        tmp_path, *robust, "train.max_steps=3", "train.eval_every=1", "train.keep_best=val_loss"
    )
    assert code == 0
    state = final_state(run_dir)
    assert state["phase_step"] < state["step"]  # it restarted
    assert read_status(run_dir)["best_step"] == state["step"]  # the last step: 5.0 - 0.1 * step falls
