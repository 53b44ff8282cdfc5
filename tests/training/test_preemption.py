"""Stop signals: Ctrl-C (SIGINT) checkpoints and stops like SIGTERM; a SIGTERM during start-up leaves
no temporary file in the run folder. The runs signal themselves at a chosen point: no timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO, run_train
from tests.training.faults import FAST

ENV = {"OMP_NUM_THREADS": "1"}


def only_run(root):
    (run,) = [p.parent for p in root.rglob("config.yaml")]
    return run


def test_sigint_checkpoints_and_stops_like_sigterm(tmp_path):
    result = run_train(
        *FAST,
        "train.checkpoint_every=100",
        f"output.path={tmp_path}",
        env={**ENV, "ROSA_TEST_SIGNAL_AT_STEP": "3:SIGINT"},
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "stopped by signal 2 (SIGINT) at step 3; checkpoint saved" in result.stderr
    run_dir = only_run(tmp_path)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and status["steps"] == 3
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"] == 3
    resumed = run_train(*FAST, "train.checkpoint_every=100", f"output.path={tmp_path}", env=ENV)
    assert resumed.returncode == 0 and "step 3," in resumed.stderr, resumed.stderr[-2000:]


SIGTERM_IN_A_WRITE = """
import runpy, signal, sys
import rosa.atomic as atomic
real, sent = atomic.atomic_write, []
def write_then_sigterm(path, write, **options):
    def interrupted(tmp):
        write(tmp)
        if str(path).endswith("status.json") and not sent:
            sent.append(path)
            signal.raise_signal(signal.SIGTERM)
    return real(path, interrupted, **options)
atomic.atomic_write = write_then_sigterm
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


def test_sigterm_during_startup_leaves_no_tmp_file(tmp_path):
    """SIGTERM while the first status.json is half written (before training starts)."""
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_IN_A_WRITE, *FAST, f"output.path={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV, "TQDM_DISABLE": "1"},
        timeout=300,
    )
    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "SIGTERM" in result.stderr
    run_dir = only_run(tmp_path)
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
