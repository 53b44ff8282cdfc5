"""The dataset registry is discovered: a dataset is its module in rosa/data/ and its conf/dataset YAML."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import rosa.data
from rosa.data import DATASETS, DataError, DatasetSpec, registry

REPO = Path(__file__).resolve().parents[2]


def test_every_module_with_a_spec_is_a_dataset_and_has_a_yaml():
    with_spec = {}
    for info in pkgutil.iter_modules(rosa.data.__path__):
        module = importlib.import_module(f"rosa.data.{info.name}")
        if hasattr(module, "SPEC"):
            with_spec[info.name] = module.SPEC
    assert dict(DATASETS) == with_spec and list(DATASETS) == sorted(with_spec)
    assert set(DATASETS) == {path.stem for path in (REPO / "conf" / "dataset").glob("*.yaml")}


@pytest.mark.parametrize("name", list(DATASETS))
def test_a_spec_owns_its_scoring(name):
    spec = DATASETS[name]
    assert isinstance(spec, DatasetSpec) and spec.name == name
    assert spec.headline_metric == spec.metrics[0] and len(set(spec.metrics)) == len(spec.metrics)
    assert callable(spec.score) and isinstance(spec.postprocess(" x "), str)
    assert set(spec.metric_fallbacks) <= set(spec.metrics)


def test_a_spec_not_named_as_its_module_is_refused(monkeypatch):
    module = importlib.import_module("rosa.data.sql")
    monkeypatch.setattr(module, "SPEC", DATASETS["viggo"])
    registry._discover.cache_clear()
    try:
        with pytest.raises(DataError, match="rosa.data.sql.SPEC: .*allowed: a DatasetSpec named 'sql'"):
            list(DATASETS)
    finally:
        monkeypatch.undo()
        registry._discover.cache_clear()
    assert DATASETS["sql"].name == "sql"


def test_layering_data_and_metrics_import_no_evaluation_or_training():
    code = (
        "import sys, rosa.metrics.e2e, rosa.metrics.perplexity, rosa.metrics.wordnet\n"
        "leaf = sorted(m for m in sys.modules if m.startswith('rosa.') and not m.startswith('rosa.metrics'))\n"
        "assert not leaf, leaf\n"
        "import rosa.data\n"
        "list(rosa.data.DATASETS)\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('rosa.evaluation', 'rosa.training', 'rosa.results')))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
