"""The method contract of rosa/methods/base.py: registration and what counts as adapter state."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from rosa.methods import METHODS, get_method
from rosa.methods.base import AdaptedLayer, Method, _adapter_tensors, register


class _SharedBufferLayer(AdaptedLayer):
    """A layer with its own mask (persistent) and a projection shared by every layer and rebuilt from a
    seed (non-persistent, as VeRA's would be): only the first is adapter state."""

    def __init__(self, base: nn.Module, shared: torch.Tensor):
        super().__init__(base)
        self.scale = nn.Parameter(torch.ones(self.out_features))
        self.register_buffer("mask", torch.ones(self.out_features, dtype=torch.bool))
        self.register_buffer("shared_projection", shared, persistent=False)

    def forward(self, x):
        return self.base(x) * self.scale


def test_non_persistent_buffers_are_not_adapter_state():
    shared = torch.randn(4, 4)
    model = nn.Sequential(_SharedBufferLayer(nn.Linear(4, 4), shared), _SharedBufferLayer(nn.Linear(4, 4), shared))
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model:
        layer.scale.requires_grad_(True)
    assert sorted(_adapter_tensors(model)) == ["0.mask", "0.scale", "1.mask", "1.scale"]


def test_every_method_is_registered_with_its_config_and_yaml():
    from rosa.config import CONF_DIR, group_choices

    assert set(METHODS) == set(group_choices("fnmodel"))
    for name, method_class in METHODS.items():
        assert method_class.name == name and hasattr(method_class.config_class, "__dataclass_fields__")
        assert (CONF_DIR / "fnmodel" / f"{name}.yaml").exists()


def test_a_name_registers_once():
    @dataclass
    class NothingConfig:
        name: str

    with pytest.raises(ValueError, match="registered twice"):
        register("lora", NothingConfig)(type("AnotherLoRA", (Method,), {}))
    assert get_method(type("Cfg", (), {"name": "fft"})()).name == "fft"
