"""Shared fixtures for the data tests: a byte-level tokenizer, dataset configs, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import transformers

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def dataset_cfg(name: str, **overrides) -> SimpleNamespace:
    values = dict(
        name=name,
        source="sample",
        path=None,
        cache=None,
        splits=None,
        max_length=512,
        sample_rows={"train": 500, "validation": 50, "test": 50},
        sample_seed=0,
        limit=None,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


@pytest.fixture(scope="session")
def tokenizer():
    return transformers.ByT5Tokenizer(extra_ids=0)  # bytes + 3 specials: pad 0, eos 1, unk 2; no bos


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data folder {SHARED_DATA} is missing (required when CI=true)")
        pytest.skip(f"shared data folder {SHARED_DATA} not found")
    return SHARED_DATA
