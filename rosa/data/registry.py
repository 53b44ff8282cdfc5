"""The dataset registry, discovered: every module of ``rosa.data`` that defines ``SPEC`` is a dataset.

A new dataset is one module, ``rosa/data/<name>.py`` with ``SPEC = DatasetSpec(name="<name>", ...)``,
and its configuration ``conf/dataset/<name>.yaml``; nothing else lists it. The modules are imported
on first use of :data:`DATASETS` or :func:`get_spec` (not when this module is imported, so that the
data modules may import the rest of ``rosa.data``), in the order of their names.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path

from rosa.data.spec import DataError, DatasetSpec


@cache
def _discover() -> dict[str, DatasetSpec]:
    specs: dict[str, DatasetSpec] = {}
    for module_info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda info: info.name):
        if module_info.ispkg:
            continue
        module = importlib.import_module(f"rosa.data.{module_info.name}")
        spec = getattr(module, "SPEC", None)
        if spec is None:
            continue
        if not isinstance(spec, DatasetSpec) or spec.name != module_info.name:
            raise DataError(
                f"{module.__name__}.SPEC: {spec!r:.80}; allowed: a DatasetSpec named {module_info.name!r}, as its module"
            )
        specs[spec.name] = spec
    return specs


class _Registry(Mapping[str, DatasetSpec]):
    """Dataset name -> DatasetSpec, discovered on first use."""

    def __getitem__(self, name: str) -> DatasetSpec:
        return _discover()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_discover())

    def __len__(self) -> int:
        return len(_discover())

    def __repr__(self) -> str:
        return f"DATASETS({', '.join(self)})"


DATASETS: Mapping[str, DatasetSpec] = _Registry()


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"dataset.name: {name!r} is not a dataset; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]
