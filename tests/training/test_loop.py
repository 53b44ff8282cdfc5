"""The loop's run path: a restart from scratch starts a clean TensorBoard log, a read-only runs
folder is one line and exit 2 with nothing left behind."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from rosa.runs import run_dir_for
from tests.training.faults import config, train
from tests.training.test_resume import tensorboard_steps

pytestmark = pytest.mark.usefixtures("one_thread")


def test_restart_from_scratch_starts_a_clean_tensorboard_log(tmp_path):
    """A run killed before its first checkpoint left events of steps 1-3; the rerun starts at step 0."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = run_dir_for(config(tmp_path))
    run_dir.mkdir(parents=True)
    stale = SummaryWriter(log_dir=str(run_dir))
    for step in (1, 2, 3):
        stale.add_scalar("train/loss", 9.0, step)
    stale.close()
    assert train(tmp_path)[0] == 0
    assert tensorboard_steps(run_dir) == [1, 2, 3, 4, 5, 6]


def test_read_only_runs_folder_is_one_line_exit_2_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    real = Path.mkdir

    def read_only(self, *args, **kwargs):  # tests run as root, where chmod does not stop writes
        if runs in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, run_dir = train(runs)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("error: ") and "Permission denied" in err, err
    assert list(runs.iterdir()) == []


def test_a_methods_loss_term_joins_the_step_loss_and_its_gradients(tmp_path):
    """``Method.loss_term``: its value is added to the logged step loss, its gradient to the step's
    gradients (seen by before_optimizer_step), before clipping (here off)."""
    import torch

    from rosa.training.loop import Trainer

    def one_step(with_term: bool):
        run = config(tmp_path, "train.max_grad_norm=null", "fnmodel.dropout=0.0")
        trainer = Trainer(run, tmp_path / "run")
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        seen = {}
        if with_term:  # 0.5 * ||theta||^2 (+ 2.5): its gradient is theta itself
            trainer.method.loss_term = lambda ctx: 0.5 * sum((p.float() ** 2).sum() for p in params) + 2.5
        trainer.method.before_optimizer_step = lambda ctx: seen.update(grads=[p.grad.clone() for p in params])
        before = [p.detach().clone() for p in params]
        stats = trainer.train_step()
        return stats["loss"], seen["grads"], before

    plain_loss, plain_grads, theta = one_step(False)
    term_loss, term_grads, _ = one_step(True)
    expected_term = 0.5 * sum(float((t.float() ** 2).sum()) for t in theta) + 2.5
    assert abs(term_loss - plain_loss - expected_term) < 1e-4 * max(1.0, expected_term)
    for g_plain, g_term, t in zip(plain_grads, term_grads, theta):
        torch.testing.assert_close(g_term, g_plain + t, rtol=1e-5, atol=1e-6)
