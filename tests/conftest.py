"""Shared test fixtures: paths, the shared data folder, a subprocess runner for train.py, and the CI
guard: under CI=true a skipped test fails, unless its reason starts with ``not applicable:`` (the test
is for another kind of machine or output). A skip there would otherwise hide a dependency that
set-up failed to install (triton, peft, torchao, submitit, Java, the shared data)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"
NOT_APPLICABLE = "not applicable: "  # the start of a skip reason that CI accepts
# every Python process the tests start imports tests/hooks/sitecustomize.py (ROSA_TEST_SIGNAL_AT_STEP)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests" / "hooks"), os.environ.get("PYTHONPATH")]))


def _fail_a_skip_in_ci(report) -> None:
    if not (IN_CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if reason.startswith(("Skipped: " + NOT_APPLICABLE, NOT_APPLICABLE)):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, where set-up must provide everything: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_a_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_a_skip_in_ci(outcome.get_result())


def shared_data_or_skip() -> Path:
    """The real datasets beside the repo; skipped locally when absent, a failure under CI=true."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if IN_CI:
        pytest.fail(f"{SHARED_DATA} is missing, but CI=true requires it")
    pytest.skip(f"{SHARED_DATA} not found")


def run_train(
    *overrides: str, cwd: Path = REPO, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python train.py <overrides>`` in a subprocess and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def rendezvous_port():
    """The port of a TCPStore this process hosts for a test's worker ranks, on a port the OS picks and
    that stays bound while the workers run: they join as clients (``join_as_client``), as ranks do
    under torchrun's agent store. A port found free and handed on (bind, close, reuse) can be taken
    by another process in between."""
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    try:
        yield store.port
    finally:
        del store


def join_as_client(rank: int, world: int, port: int) -> None:
    """The environment of a worker rank that joins :func:`rendezvous_port`'s store."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        TORCHELASTIC_USE_AGENT_STORE="True",
    )


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny tensors: faster, and immune to a loaded machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_tokenizer():
    from rosa.models.tiny import tiny_tokenizer

    return tiny_tokenizer()
