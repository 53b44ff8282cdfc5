"""Fine-tuning methods. Each method is one module; this registry maps ``fnmodel.name`` to it.

To add a method: write ``rosa/methods/<name>.py`` with a ``Method`` subclass and a config dataclass,
register both below, and add ``conf/fnmodel/<name>.yaml``.
"""
from __future__ import annotations

from rosa.config import FFTConfig, LoRAConfig, register_method_schema
from rosa.methods.base import LoopRequest, Method, StepContext
from rosa.methods.fft import FullFineTuning
from rosa.methods.lora import LoRA

METHODS: dict[str, type[Method]] = {"fft": FullFineTuning, "lora": LoRA}
register_method_schema("fft", FFTConfig)
register_method_schema("lora", LoRAConfig)


def register(name: str, method: type[Method], schema: type) -> None:
    METHODS[name] = method
    register_method_schema(name, schema)


def get_method(cfg, seed: int = 0) -> Method:
    """The method named by ``cfg.name``, built from its config section."""
    if cfg.name not in METHODS:
        raise ValueError(f"fnmodel.name={cfg.name!r} is unknown; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[cfg.name](cfg, seed=seed)


__all__ = ["METHODS", "LoopRequest", "Method", "StepContext", "get_method", "register"]

from rosa.methods.rosa_orthogonal import RosaOrthogonal, RosaOrthogonalConfig  # noqa: E402
register("rosa-orthogonal", RosaOrthogonal, RosaOrthogonalConfig)

from rosa.methods.rosa_robust import RosaRobust, RosaRobustConfig, SpA, SpAConfig  # noqa: E402
register("rosa-robust", RosaRobust, RosaRobustConfig)
register("spa", SpA, SpAConfig)

from rosa.methods.peft_baseline import PeftBaseline, PeftMethodConfig  # noqa: E402
register("peft", PeftBaseline, PeftMethodConfig)
