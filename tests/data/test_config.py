"""conf/dataset/*.yaml: the keys, the defaults, and that a DictConfig works as dataset_cfg."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rosa.data import get_spec, load_examples

CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset"
KEYS = ["name", "source", "path", "cache", "splits", "max_length", "sample_rows", "sample_seed", "limit"]


@pytest.mark.parametrize("name", ["e2e", "eli5", "gsm8k", "viggo", "sql"])
def test_dataset_yaml(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert list(cfg) == KEYS
    assert cfg.name == name and cfg.source == "sample" and cfg.path is None and cfg.cache is None
    # the byte-level tiny tokenizer needs room for ViGGO's long instruction prompt and GSM8k questions
    assert cfg.max_length == (1024 if name in ("viggo", "gsm8k") else 512)
    assert cfg.sample_seed == 0 and cfg.limit is None
    assert OmegaConf.to_container(cfg.sample_rows) == {"train": 500, "validation": 50, "test": 50}
    assert OmegaConf.to_container(cfg.splits) == dict(get_spec(name).default_splits)
    examples, report = load_examples(cfg, "validation")
    assert len(examples) == 50 and report.kept == 50
