"""Training with the shared prompt prefix (ViGGO's instruction, train.shared_prefix=auto): the run says
what it shares, matches train.shared_prefix=off step for step (gradient accumulation, both loss
norms), and a killed run resumes with identical per-step losses."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import run_train

VIGGO = [
    "model=tiny",
    "dataset=viggo",
    "device=cpu",
    "train.max_steps=6",
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "train.checkpoint_every=2",
    "dataset.sample_rows.train=24",
    "dataset.sample_rows.validation=4",
    "train.eval_batches=2",
    "train.eval_at_end=false",
    "train.sample_at_eval=false",
]


def history(root) -> list[dict]:
    run_dir = next(p.parent for p in root.rglob("config.yaml"))
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    state = json.loads((run_dir / "checkpoints" / latest["path"] / "state.json").read_text())
    return [{k: h[k] for k in ("step", "loss")} for h in state["history"]]


@pytest.mark.parametrize("loss_norm", ["tokens", "examples"])
def test_auto_matches_off_step_for_step(tmp_path, loss_norm, one_thread):
    from rosa.config import compose, validate
    from rosa.training.loop import Trainer

    results = {}
    for mode in ("off", "auto"):
        run = validate(
            compose(
                [
                    *VIGGO,
                    "fnmodel=lora",
                    "fnmodel.dropout=0",
                    f"train.loss_norm={loss_norm}",
                    f"train.shared_prefix={mode}",
                ]
            )
        )
        trainer = Trainer(run, tmp_path / mode)
        prefixes = [trainer.prefix_length(b) for b in trainer.batches.step(0)]
        steps = []
        for _ in range(3):
            stats = trainer.train_step()
            trainer.step += 1
            trainer.phase_step += 1
            steps += [stats["loss"], stats["grad_norm"]]
        results[mode] = steps, trainer.validation_loss()["loss"], prefixes
    (plain, plain_val, off_prefixes), (shared, shared_val, prefixes) = results["off"], results["auto"]
    assert set(off_prefixes) == {0} and min(prefixes) > 500  # the byte-level tokenizer: ~600 shared tokens
    assert shared == pytest.approx(plain, rel=1e-5)
    assert shared_val == pytest.approx(plain_val, rel=1e-5)


def test_run_reports_the_prefix_and_resumes_after_a_kill(tmp_path):
    straight = run_train(*VIGGO, f"output.path={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert (
        "shared prefix (train.shared_prefix=auto): 12 of 12 training micro-batches share a prefix of" in straight.stderr
    )
    root = tmp_path / "killed"
    killed = run_train(*VIGGO, f"output.path={root}", env={"ROSA_TEST_SIGNAL_AT_STEP": "3:SIGKILL"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run_train(*VIGGO, f"output.path={root}")
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-2000:]
    assert history(root) == history(tmp_path / "straight")  # dropout 0.05 included: same masks, same losses
    assert len(history(root)) == 6
