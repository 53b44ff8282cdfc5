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


def build_model(run, device, precision: dict):
    """The one place a run's model is built, for training and for evaluation alike: tokenizer, base
    model in ``precision`` (``rosa.models.resolve_precision``; NF4 quantises the decoder), the method's
    adapters (``prepare``), trainable parameters in ``precision["param_dtype"]``, all on ``device``.
    Returns ``(model, tokenizer, method)``. Every check of the model, the method and the device runs
    here, as the model is built (ModelSourceError or ConfigError, one line): the run folder does not
    exist yet."""
    from rosa.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(run.model)
    model = load_model(
        run.model, tokenizer, precision["base_dtype"], device, quantize="nf4" if precision["name"] == "nf4" else None
    )
    method = get_method(run.fnmodel, seed=run.seed)
    method.check_fits(model, device)
    model = method.prepare(model)
    cast_trainable(model, precision["param_dtype"], device)
    return model, tokenizer, method


def cast_trainable(model, dtype, device) -> None:
    """Trainable parameters in ``dtype`` (adapters are created in fp32), the model on ``device``."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)
    model.to(device)


def get_method(cfg, seed: int = 0) -> Method:
    """The method named by ``cfg.name``, built from its config section."""
    if cfg.name not in METHODS:
        raise ValueError(f"fnmodel.name={cfg.name!r} is unknown; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[cfg.name](cfg, seed=seed)


__all__ = ["METHODS", "LoopRequest", "Method", "StepContext", "build_model", "cast_trainable", "get_method", "register"]
