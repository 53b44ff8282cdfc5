"""docs/architecture.md matches the code: every method call it names exists on Method, and every hook
it lists is called by the loop; every module path in its map exists."""

from __future__ import annotations

import re
from pathlib import Path

from rosa.methods.base import Method

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
HOOKS = ("before_step", "loss_term", "before_optimizer_step", "after_step")


def test_every_method_call_in_the_doc_exists():
    named = set(re.findall(r"\bmethod\.(\w+)\(", DOC))
    assert set(HOOKS) <= named
    assert sorted(n for n in named if not callable(getattr(Method, n, None))) == []


def test_every_hook_is_called_by_the_loop_in_the_documented_order():
    loop = (REPO / "rosa" / "training" / "loop.py").read_text(encoding="utf-8")
    calls = {hook: loop.find(f"self.method.{hook}(") for hook in HOOKS}
    assert all(at >= 0 for at in calls.values()), calls
    # before_step and after_step are called in fit(); the other two inside train_step, in this order
    assert calls["loss_term"] < calls["before_optimizer_step"]
    assert all(f"def {hook}(" in (REPO / "rosa" / "methods" / "base.py").read_text() for hook in HOOKS)


def test_every_path_in_the_map_exists():
    paths = re.findall(r"^(rosa/[\w/]*\.?\w*|conf/)", DOC, flags=re.M)
    assert len(paths) > 10
    assert [p for p in paths if not (REPO / p).exists()] == []


TRACE = re.compile(r"^\d+\. `([\w/.]+\.py):([\w.]+)`", re.MULTILINE)


def test_each_hop_trace_names_existing_calls_and_has_at_most_8():
    """The knob traces (issue 24's "at most 8 calls") name functions that exist where they say."""
    traces = re.findall(r"^`([\w.]+)` \(default in `([\w/.]+)`\):\n((?:\d+\. .*\n(?: {3}.*\n)*)+)", DOC, re.MULTILINE)
    assert [key for key, _, _ in traces] == ["fnmodel.rank", "train.lr"]
    for key, default, steps in traces:
        hops = TRACE.findall(steps)
        assert 1 <= len(hops) <= 8 and len(hops) == len(re.findall(r"^\d+\. ", steps, re.MULTILINE)), key
        assert (REPO / default).exists() and f"{key.split('.')[-1]}:" in (REPO / default).read_text()
        for path, name in hops:
            source = (REPO / path).read_text(encoding="utf-8")
            *owner, function = name.split(".")
            assert all(re.search(rf"^class {c}\b", source, re.MULTILINE) for c in owner), (key, path, name)
            assert re.search(rf"^\s*(def|class) {function}\b", source, re.MULTILINE), (key, path, name)
