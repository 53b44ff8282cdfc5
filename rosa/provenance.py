"""Which code made a result: the git commit of the checkout and the tracked files that differ from it
(a leaf: imports no other part of the package).

Runs record it in ``status.json`` (``trained_with``: one entry per commit that trained the run, so a
run resumed under other code says so) and evaluations in their ``metrics-<split>.json`` (``code``);
benchmark sections end with it (``bench/record.py``). ``docs/`` is left out of the dirty list:
recording results edits it, and it holds no code a run imports.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def code_version(root: Path = REPO) -> dict:
    """``{"commit": <full hash>, "dirty": [tracked files outside docs/ that differ from it]}``, or
    ``{"commit": None, "dirty": None}`` outside a git checkout (an installed copy, no git)."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        dirty = _git(root, "diff", "--name-only", "HEAD", "--", ".", ":(exclude)docs").split()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def describe(version: dict) -> str:
    """``<short hash> (clean)``, ``<short hash> (dirty: a, b)`` or ``unknown (not a git checkout)``."""
    if not version.get("commit"):
        return "unknown (not a git checkout)"
    dirty = version.get("dirty") or []
    if not dirty:
        return f"{version['commit'][:7]} (clean)"
    shown = ", ".join(dirty[:10]) + (f" and {len(dirty) - 10} more" if len(dirty) > 10 else "")
    return f"{version['commit'][:7]} (dirty: {shown})"
