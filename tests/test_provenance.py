"""Which code made a result: the commit and dirty files (rosa.provenance), recorded by every run in
status.json (one entry per code version that trained it) and by every evaluation in its metrics file."""

from __future__ import annotations

import json
import subprocess

from rosa.provenance import changed_result_code, code_version, describe, same_code
from rosa.training.lifecycle import _trained_with
from tests.conftest import run_train


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_commit_and_dirty_files(tmp_path):
    assert code_version(tmp_path) == {"commit": None, "dirty": None, "code": None}
    assert describe(code_version(tmp_path)) == "unknown (not a git checkout)"
    git(tmp_path, "init", "-q")
    (tmp_path / "docs").mkdir()
    (tmp_path / "train.py").write_text("a\n")
    (tmp_path / "docs" / "page.md").write_text("a\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    code = code_version(tmp_path)["code"]
    assert code_version(tmp_path) == {"commit": head, "dirty": [], "code": code}
    (tmp_path / "docs" / "page.md").write_text("b\n")  # results pages are not code
    (tmp_path / "notes.txt").write_text("untracked\n")  # nor is an untracked file
    assert code_version(tmp_path) == {"commit": head, "dirty": [], "code": code}
    (tmp_path / "train.py").write_text("b\n")
    assert code_version(tmp_path) == {"commit": head, "dirty": ["train.py"], "code": code}
    assert describe(code_version(tmp_path)) == f"{head[:7]} (dirty: train.py)"


def commit_all(repo, message):
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message)


def test_the_code_fingerprint_follows_the_files_that_decide_numbers(tmp_path):
    for name in (
        "rosa/methods/lora.py",
        "rosa/results/compile.py",
        "rosa/jobs.py",
        "tests/test_x.py",
        "docs/results/cell/metrics.json",
        "bench/b.py",
        "conf/config.yaml",
        "train.py",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a\n")
    git(tmp_path, "init", "-q")
    commit_all(tmp_path, "one")
    first = code_version(tmp_path)
    run = [{**first, "from_step": 0}]
    for name in (
        "docs/results/cell/metrics.json",
        "tests/test_x.py",
        "bench/b.py",
        "rosa/results/compile.py",
        "rosa/jobs.py",
    ):  # a new commit that changes no file a run's numbers depend on
        (tmp_path / name).write_text("b\n")
        commit_all(tmp_path, name)
        now = code_version(tmp_path)
        assert now["commit"] != first["commit"] and now["code"] == first["code"], name
        assert same_code(run, now)
    for name in ("rosa/methods/lora.py", "conf/config.yaml", "train.py"):
        (tmp_path / name).write_text("c\n")
        dirty = code_version(tmp_path)
        assert changed_result_code(dirty) == [name] and not same_code(run, dirty), name  # uncommitted
        commit_all(tmp_path, name)
        now = code_version(tmp_path)
        assert now["code"] != first["code"] and not same_code(run, now), name
        run = [{**now, "from_step": 0}]
        assert same_code(run, now)
        assert not same_code(run + [{**now, "from_step": 5}], now)  # resumed: two entries


def test_a_resume_under_other_code_adds_an_entry(monkeypatch):
    from rosa.training import lifecycle

    first = {"commit": "a" * 40, "dirty": []}
    monkeypatch.setattr(lifecycle, "code_version", lambda: first)
    entries = _trained_with(None, 0)
    assert entries == [{**first, "from_step": 0}]
    assert _trained_with({"trained_with": entries}, 8) == entries  # same code: unchanged
    monkeypatch.setattr(lifecycle, "code_version", lambda: {"commit": "a" * 40, "dirty": ["rosa/x.py"]})
    assert _trained_with({"trained_with": entries}, 8)[1] == {
        "commit": "a" * 40,
        "dirty": ["rosa/x.py"],
        "from_step": 8,
    }


def test_a_run_and_its_evaluation_record_the_code(tmp_path):
    result = run_train(
        "train.max_steps=2",
        "dataset.sample_rows.train=8",
        "dataset.sample_rows.validation=4",
        "dataset.sample_rows.test=4",
        "eval.limit=2",
        "train.sample_at_eval=false",
        f"output.path={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = next(p.parent for p in tmp_path.rglob("config.yaml"))
    version = code_version()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["trained_with"] == [{**version, "from_step": 0}]
    metrics = json.loads((run_dir / "metrics-test.json").read_text())
    assert metrics["code"] == version and metrics["trained_with"] == status["trained_with"]
