"""Fine-tuning methods: one module each, registered by ``@register(name, Config)`` (``base.py``).

Every module of this package is imported here, so a method is found from its own file: adding one is
``rosa/methods/<name>.py`` (the Method subclass, its config dataclass, its math in the docstring) plus
``conf/fnmodel/<name>.yaml`` (its defaults), nothing else.
"""
from __future__ import annotations

import importlib
import pkgutil

from rosa.methods.base import METHODS, LoopRequest, Method, StepContext, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def get_method(cfg, seed: int = 0) -> Method:
    """The method named by ``cfg.name``, built from its config section."""
    if cfg.name not in METHODS:
        raise ValueError(f"fnmodel.name={cfg.name!r} is unknown; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[cfg.name](cfg, seed=seed)


__all__ = ["METHODS", "LoopRequest", "Method", "StepContext", "get_method", "register"]
