"""Run folders: one process per run (a lock naming its holder), a missing or garbage status.json of a
finished run is restored from its final artefacts (not retrained), a garbage one of an unfinished run
is reported in one line and the run resumes."""

from __future__ import annotations

import fcntl
import json
import logging

import pytest

from rosa.runs import run_dir_for
from rosa.training import lifecycle
from tests.training.faults import Killed, config, die_before_step, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_second_process_on_the_same_run_exits_2_naming_the_holder(tmp_path, capsys):
    run_dir = run_dir_for(config(tmp_path))
    run_dir.mkdir(parents=True)
    with open(run_dir / ".lock", "w") as holder:  # another process's lock (a second open file: flock conflicts)
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("pid 4242 on somehost\n")
        holder.flush()
        code, _ = train(tmp_path)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "pid 4242 on somehost" in err and str(run_dir) in err, err
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_finished_run_without_a_readable_status_is_not_retrained(tmp_path, monkeypatch, capsys, damage):
    code, run_dir = train(tmp_path)
    assert code == 0
    status_file = run_dir / "status.json"
    record = json.loads(status_file.read_text())
    if damage == "deleted":
        status_file.unlink()
    else:
        status_file.write_text("\0garbage")

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(lifecycle, "Trainer", no_training)
    capsys.readouterr()
    assert train(tmp_path)[0] == 0
    out = capsys.readouterr()
    assert "already done" in out.out and "status.json" in out.err, out
    restored = json.loads(status_file.read_text())
    assert restored["state"] == "done"
    for key in ("started", "ended", "steps", "train_time_s", "final_val_loss", "trainable_params"):
        assert restored[key] == record[key], key


def test_garbage_status_of_an_unfinished_run_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, caplog):
    die_before_step(monkeypatch, 5)
    with pytest.raises(Killed):
        train(tmp_path)
    monkeypatch.undo()
    (run_dir,) = [p.parent for p in tmp_path.rglob("config.yaml")]
    (run_dir / "status.json").write_text("{garbage")
    caplog.set_level(logging.INFO)
    assert train(tmp_path)[0] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(run_dir / "status.json") in warnings[0], warnings
    assert any("resumed from" in r.getMessage() and "step 4," in r.getMessage() for r in caplog.records)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"


def test_a_null_method_learning_rate_names_the_run_with_train_lr():
    """rosa-robust / spa ``lora_lr: null`` / ``sparse_lr: null`` mean train.lr (their YAML says so)."""
    from rosa.config import compose, validate
    from rosa.runs import readable_name

    name = readable_name(validate(compose(["fnmodel=rosa-robust", "fnmodel.lora_lr=null", "train.lr=3e-3"])))
    assert "-lr0.003-0.0002" in name, name
    assert "-lr0.003" in readable_name(validate(compose(["fnmodel=spa", "fnmodel.sparse_lr=null", "train.lr=3e-3"])))
