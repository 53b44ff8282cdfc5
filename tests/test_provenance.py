"""Which code made a result: the commit and dirty files (rosa.provenance), recorded by every run in
status.json (one entry per code version that trained it) and by every evaluation in its metrics file."""
from __future__ import annotations

import json
import subprocess

from rosa.provenance import code_version, describe
from rosa.training.loop import _trained_with
from tests.conftest import run_train


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_commit_and_dirty_files(tmp_path):
    assert code_version(tmp_path) == {"commit": None, "dirty": None}
    assert describe(code_version(tmp_path)) == "unknown (not a git checkout)"
    git(tmp_path, "init", "-q")
    (tmp_path / "docs").mkdir()
    (tmp_path / "train.py").write_text("a\n")
    (tmp_path / "docs" / "page.md").write_text("a\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert code_version(tmp_path) == {"commit": head, "dirty": []}
    (tmp_path / "docs" / "page.md").write_text("b\n")      # results pages are not code
    (tmp_path / "notes.txt").write_text("untracked\n")    # nor is an untracked file
    assert code_version(tmp_path) == {"commit": head, "dirty": []}
    (tmp_path / "train.py").write_text("b\n")
    assert code_version(tmp_path) == {"commit": head, "dirty": ["train.py"]}
    assert describe(code_version(tmp_path)) == f"{head[:7]} (dirty: train.py)"


def test_a_resume_under_other_code_adds_an_entry(monkeypatch):
    from rosa.training import loop
    first = {"commit": "a" * 40, "dirty": []}
    monkeypatch.setattr(loop, "code_version", lambda: first)
    entries = _trained_with(None, 0)
    assert entries == [{**first, "from_step": 0}]
    assert _trained_with({"trained_with": entries}, 8) == entries            # same code: unchanged
    monkeypatch.setattr(loop, "code_version", lambda: {"commit": "a" * 40, "dirty": ["rosa/x.py"]})
    assert _trained_with({"trained_with": entries}, 8)[1] == {"commit": "a" * 40, "dirty": ["rosa/x.py"], "from_step": 8}


def test_a_run_and_its_evaluation_record_the_code(tmp_path):
    result = run_train("train.max_steps=2", "dataset.sample_rows.train=8", "dataset.sample_rows.validation=4",
                       "dataset.sample_rows.test=4", "eval.limit=2", "train.sample_at_eval=false",
                       f"output.path={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = next(p.parent for p in tmp_path.rglob("config.yaml"))
    version = code_version()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["trained_with"] == [{**version, "from_step": 0}]
    metrics = json.loads((run_dir / "metrics-test.json").read_text())
    assert metrics["code"] == version and metrics["trained_with"] == status["trained_with"]
