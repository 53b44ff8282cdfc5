"""Full fine-tuning: every parameter of the model trains (the baseline of both papers).

There is nothing to merge; the "adapter" is the whole state dict, so checkpoints are as large as
the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from rosa.methods.base import Method, MethodConfig, register


@dataclass(kw_only=True)
class FFTConfig(MethodConfig):
    name: str


@register("fft", FFTConfig, aliases=("none",))  # none: the ROSA code base's name for no adapter
class FullFineTuning(Method):
    trains_base_weights = True
    quantized_base = False  # 4-bit weights cannot be trained

    def prepare(self, model: nn.Module) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return model
