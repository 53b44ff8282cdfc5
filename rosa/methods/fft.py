"""Full fine-tuning: every parameter of the model trains (the baseline of both papers).

There is nothing to merge; the "adapter" is the whole state dict, so checkpoints are as large as
the model.
"""
from __future__ import annotations

from torch import nn

from rosa.methods.base import Method


class FullFineTuning(Method):
    name = "fft"

    def prepare(self, model: nn.Module) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return model
