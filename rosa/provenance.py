"""Which code made a result: the git commit of the checkout and the tracked files that differ from it
(a leaf: imports no other part of the package).

Runs record it in ``status.json`` (``trained_with``: one entry per commit that trained the run, so a
run resumed under other code says so) and evaluations in their ``metrics-<split>.json`` (``code``);
benchmark sections end with it (``bench/record.py``). ``docs/`` is left out of the dirty list:
recording results edits it, and it holds no code a run imports.

``code`` fingerprints the committed files that decide a run's numbers (``RESULT_CODE``: the package
less its tables and grid front-end, the configs, the entry points, the pinned dependencies). Two
commits that differ only in docs, tests, benchmarks or committed results share it, so a grid's
committed cells stay current while their results are committed (``rosa.results.committed``).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULT_CODE = (
    "rosa",
    "conf",
    "train.py",
    "eval.py",
    "pyproject.toml",
    "requirements.txt",
    "requirements.lock",
    "requirements-nodeps.txt",
)
NOT_RESULT_CODE = ("rosa/results", "rosa/jobs.py")  # tabulate and launch; a run's numbers never read them


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def code_version(root: Path = REPO) -> dict:
    """``{"commit": <full hash>, "dirty": [tracked files outside docs/ that differ from it], "code":
    <fingerprint of the commit's RESULT_CODE files>}``, or all None outside a git checkout."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        dirty = _git(root, "diff", "--name-only", "HEAD", "--", ".", ":(exclude)docs").split()
        listing = _git(root, "ls-tree", "-r", "HEAD", "--", *RESULT_CODE)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "code": None}
    kept = [line for line in listing.splitlines() if not line.split("\t", 1)[-1].startswith(NOT_RESULT_CODE)]
    return {"commit": commit, "dirty": dirty, "code": hashlib.sha1("\n".join(kept).encode()).hexdigest()[:12]}


def changed_result_code(version: dict) -> list[str]:
    """The dirty files among RESULT_CODE: a result made with them is not the committed ``code``."""
    return [f for f in version.get("dirty") or [] if f.startswith(RESULT_CODE) and not f.startswith(NOT_RESULT_CODE)]


def same_code(trained_with: list[dict] | None, version: dict) -> bool:
    """Whether a run (its ``trained_with``) was trained from start to end by ``version``'s committed code."""
    return (
        bool(version.get("code"))
        and not changed_result_code(version)
        and len(trained_with or []) == 1
        and trained_with[0].get("code") == version["code"]
        and not changed_result_code(trained_with[0])
    )


def describe(version: dict) -> str:
    """``<short hash> (clean)``, ``<short hash> (dirty: a, b)`` or ``unknown (not a git checkout)``."""
    if not version.get("commit"):
        return "unknown (not a git checkout)"
    dirty = version.get("dirty") or []
    if not dirty:
        return f"{version['commit'][:7]} (clean)"
    shown = ", ".join(dirty[:10]) + (f" and {len(dirty) - 10} more" if len(dirty) > 10 else "")
    return f"{version['commit'][:7]} (dirty: {shown})"


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform module knows: results name
    the machine that made them (bench/record.py, rosa.results.committed)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
