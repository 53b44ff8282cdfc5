"""Shared test fixtures: paths, the shared data folder, and a subprocess runner for train.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


def shared_data_or_skip() -> Path:
    """The real datasets beside the repo; skipped locally when absent, a failure under CI=true."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if IN_CI:
        pytest.fail(f"{SHARED_DATA} is missing, but CI=true requires it")
    pytest.skip(f"{SHARED_DATA} not found")


def run_train(*overrides: str, cwd: Path = REPO, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python train.py <overrides>`` in a subprocess and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *overrides], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


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
