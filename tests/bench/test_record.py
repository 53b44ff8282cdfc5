"""bench/record.py stamps every section with the commit it was measured at (and whether the tree had
uncommitted code changes), so a stale section shows as such; every section in docs/ carries one."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import record  # noqa: E402

SECTION = re.compile(r"<!-- bench:([\w.-]+) -->(.*?)<!-- /bench:\1 -->", re.S)


def git(root, *args) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def last_line(section_text: str) -> str:
    return section_text.rstrip().splitlines()[-1]


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "bench.py").write_text("x = 1\n")
    (tmp_path / "docs" / "benchmarks.md").write_text("# Benchmarks\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_stamp_names_the_commit_and_the_changed_code(repo):
    head = git(repo, "rev-parse", "--short", "HEAD")
    assert record.commit_stamp(repo) == f"Commit: {head} (clean)"
    (repo / "docs" / "benchmarks.md").write_text("# Benchmarks\n\nrecorded\n")  # docs/ does not count
    (repo / "notes.txt").write_text("untracked\n")  # nor untracked files
    assert record.commit_stamp(repo) == f"Commit: {head} (clean)"
    (repo / "bench.py").write_text("x = 2\n")
    assert record.commit_stamp(repo) == f"Commit: {head} (dirty: bench.py)"
    git(repo, "add", "bench.py")  # staged is still uncommitted
    assert record.commit_stamp(repo) == f"Commit: {head} (dirty: bench.py)"


def test_stamp_outside_git(tmp_path):
    assert record.commit_stamp(tmp_path) == "Commit: unknown (not a git checkout)"


def test_written_section_ends_with_the_commit_line(tmp_path):
    doc = tmp_path / "benchmarks.md"
    record.write("demo", "a table", command="python bench/demo.py --record", doc=doc)
    ((name, body),) = SECTION.findall(doc.read_text())
    head = git(REPO, "rev-parse", "--short", "HEAD")
    assert name == "demo" and "a table" in body
    assert body.startswith("\nCommand: `python bench/demo.py --record`")
    assert re.fullmatch(rf"Commit: {head} \((clean|dirty: .+)\)", last_line(body))
    assert last_line(body) == record.commit_stamp()


def test_a_section_not_recorded_yet_is_a_slot_the_recording_fills_in_place(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# B\n\nbefore\n\n<!-- bench-slot:gpu -->\nNot run.\n<!-- /bench-slot:gpu -->\n\nafter\n")
    record.write("gpu", "a table", command="python bench/gpu.py --record", doc=doc)
    text = doc.read_text()
    assert "bench-slot" not in text and "Not run." not in text and "## gpu" not in text
    assert text.index("before") < text.index("<!-- bench:gpu -->") < text.index("a table") < text.index("after")


def test_recording_takes_the_stamp_before_the_body_runs(tmp_path, monkeypatch):
    """The code that ran is the code at the start: a change made while it runs is not the run's."""
    stamps = iter(["Commit: aaaaaaa (clean)", "Commit: aaaaaaa (dirty: bench/x.py)"])
    monkeypatch.setattr(record, "commit_stamp", lambda root=None: next(stamps))
    monkeypatch.setattr(sys, "argv", [str(REPO / "bench" / "x.py"), "--n", "3", "--record"])
    doc = tmp_path / "benchmarks.md"
    with record.recording("demo", doc=doc):
        print("the output")
    ((_, body),) = SECTION.findall(doc.read_text())
    assert "Command: `python bench/x.py --n 3 --record`" in body and "the output" in body
    assert re.search(r"\nLoad average: [\d.]+ at the start, [\d.]+ at the end  \n", body)
    assert last_line(body) == "Commit: aaaaaaa (clean)"


def test_every_section_in_docs_ends_with_a_commit_line():
    pages = sorted((REPO / "docs").glob("*.md"))
    found = 0
    for page in pages:
        for name, body in SECTION.findall(page.read_text()):
            found += 1
            assert last_line(body).startswith("Commit: "), (
                f"{page.name}: section {name!r} has no commit line at its end"
            )
    assert found


def test_every_recorded_benchmark_says_how_its_cases_were_timed():
    """Interleaved rounds or one case after another: a reader must know which before trusting a ratio."""
    for name, body in SECTION.findall((REPO / "docs" / "benchmarks.md").read_text()):
        assert re.search(r"interleaved|one after another", body), (
            f"section {name!r} does not say how its cases were timed"
        )
