"""The dataset registry: one DatasetSpec per dataset module."""

from __future__ import annotations

from rosa.data import e2e, eli5, gsm8k, sql, viggo
from rosa.data.schema import DataError, DatasetSpec

DATASETS: dict[str, DatasetSpec] = {module.SPEC.name: module.SPEC for module in (e2e, eli5, gsm8k, viggo, sql)}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"dataset.name: {name!r} is not a dataset; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]
