"""``train.max_steps=0`` evaluates the untrained base model as it is (a ``base`` row in the tables);
a run logs a progress line per step to train.log (output may go to a file); a grid runs serially."""

from __future__ import annotations

import json

from rosa import jobs
from rosa.config import compose, validate
from rosa.results.compile import BASE, build_tables
from rosa.runs import run_hash
from tests.conftest import run_train
from tests.evaluation.tiny_run import only_run

TINY = [
    "dataset.sample_rows.train=16",
    "dataset.sample_rows.validation=4",
    "dataset.sample_rows.test=4",
    "eval.limit=2",
    "train.sample_at_eval=false",
    "threads=1",
]


def test_zero_steps_evaluates_the_base_model(tmp_path):
    result = run_train(*TINY, "train.max_steps=0", f"output.path={tmp_path}/runs", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    run = only_run(tmp_path / "runs")
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["steps"] == 0 and status["threads"] == 1
    assert (run / "metrics-test.json").exists()
    (table,), _ = build_tables(tmp_path / "runs")
    assert table.raw[0]["method"] == BASE and table.raw[0]["trainable_params"] == 0


def test_progress_lines_in_train_log_and_serial_grid(tmp_path, capsys):
    grid = jobs.Grid("t", "", {}, [TINY + ["train.max_steps=2", "train.eval_at_end=false"]])
    assert jobs.submit(grid, "serial", dry_run=False, retry_failed=False, extra=[f"output.path={tmp_path}/runs"]) == 0
    run = only_run(tmp_path / "runs")
    log = (run / "train.log").read_text()
    assert "step 1 (1/2 of this phase): loss" in log and "step 2 (2/2 of this phase): loss" in log
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["step_time_s"] > 0
    assert "[1/1]" in capsys.readouterr().out
    assert jobs.submit(grid, "serial", dry_run=False, retry_failed=False, extra=[f"output.path={tmp_path}/runs"]) == 0
    assert "skip  done" in capsys.readouterr().out


def test_run_identity_survives_added_keys_at_their_old_behaviour():
    base = validate(compose([]))
    same = [["model.chat_template=false"], ["threads=1"], ["train.eval_batches=3"], ["train.eval_every=5"]]
    for overrides in same:
        assert run_hash(validate(compose(overrides))) == run_hash(base), overrides
    assert run_hash(validate(compose(["model.chat_template=true"]))) != run_hash(base)
    assert run_hash(validate(compose(["train.lr=1e-3"]))) != run_hash(base)
