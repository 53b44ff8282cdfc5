"""DoRA: weight-decomposed low-rank adaptation (Liu et al. 2024, arXiv 2402.09353).

DoRA splits each adapted weight into a magnitude vector and a direction. The direction is adapted by
LoRA (``rosa/methods/lora.py``), the magnitude is trained directly::

    V  = W0 + s * B A                     (out x in),  s = alpha / r   (rsLoRA: alpha / sqrt(r))
    W' = m * V / ||V||_c                  ||V||_c: the L2 norm of each output row of V (over `in`)

m (one entry per output) starts at ||W0||_c and B at 0, so W' = W0 and training starts from the
pretrained function; A is kaiming-uniform as in LoRA. As the paper's section 4.3 (and HF PEFT)
suggests, ||V||_c is treated as a constant in backpropagation: it follows every update of B A, but
no gradient flows through it, so A, B and m get their gradients through g = m / ||V||_c and B A x.

The forward pass computes the base layer once and never forms W' (only V, without gradient, for
the norm)::

    y = g * (W0 x + s B A x) + bias                         (eval, or dropout = 0)
    y = W0 x + bias + (g - 1) * W0 d(x) + g * s B A d(x)    (training with dropout d)

The second line is the paper's code and PEFT's ``DoraLinearLayer`` with dropout (``d`` acts on the
adapter's input; the base output stays on the un-dropped x); it costs a second base matmul, on d(x).
Both lines are the same function when d is the identity. The base output comes from the base module
itself, so GPT-2's Conv1D, biases and 4-bit bases work unchanged; the norm is taken in fp32.

Merging writes W' = g * V into the base weight (``delta_weight`` returns W' - W0). The adapter is
saved in our format and in HF PEFT's (LoRA's files plus ``<layer>.lora_magnitude_vector`` and
``use_dora: true``), so ``peft.PeftModel.from_pretrained(base, dir)`` loads it with equal logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rosa.methods.base import dense_weight, register
from rosa.methods.lora import LoRA, LoRAConfig, LoRALayer, keep_mask


@dataclass(kw_only=True)
class DoRAConfig(LoRAConfig):
    """Keys of ``conf/fnmodel/dora.yaml`` (their defaults and meaning are there): LoRA's keys."""


class DoRALayer(LoRALayer):
    def __init__(
        self, base: nn.Module, rank: int, alpha: float, dropout: float, rslora: bool, generator: torch.Generator
    ):
        super().__init__(base, rank, alpha, dropout, rslora, generator)
        with torch.no_grad():
            norm = torch.linalg.vector_norm(dense_weight(base, torch.float32), dim=1)
        self.magnitude = nn.Parameter(norm.to(self.lora_A.device))  # m = ||W0||_c, fp32 like A and B

    def direction(self, w0: torch.Tensor | None = None) -> torch.Tensor:
        """V = W0 + s B A, [out, in] in fp32 (no gradient: DoRA's norm is a constant)."""
        with torch.no_grad(), torch.autocast(self.lora_A.device.type, enabled=False):
            w0 = dense_weight(self.base, torch.float32) if w0 is None else w0
            return w0 + LoRALayer.delta_weight(self)

    def row_norm(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.direction(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # W0 x + bias
        bias, dropped = self.base.bias, self.training and self.dropout > 0
        h = x * keep_mask(x.shape, self.dropout, x.device).to(x.dtype) / (1.0 - self.dropout) if dropped else x
        base_h = self.base(h) if dropped else y
        if bias is not None:
            base_h = base_h - bias  # W0 h
        rest = y - base_h if dropped else bias  # W0 x + bias - W0 d(x), or bias
        low = F.linear(F.linear(h.to(self.lora_A.dtype), self.lora_A) * self.scale, self.lora_B).to(x.dtype)
        g = self.magnitude / self.row_norm().to(self.magnitude.dtype)  # m / ||V||_c, in m's dtype
        out = g * (base_h + low)
        return out if rest is None else out + rest

    def peft_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            **super().peft_tensors(prefix),
            f"{prefix}.lora_magnitude_vector": self.magnitude.detach().float().contiguous().cpu(),
        }

    def delta_weight(self) -> torch.Tensor:
        """W' - W0 with W' = m * V / ||V||_c, so that ``merged_base`` writes W'."""
        w0 = dense_weight(self.base, torch.float32)
        v = self.direction(w0)
        g = self.magnitude.detach().float() / torch.linalg.vector_norm(v, dim=1)
        return g[:, None] * v - w0


@register("dora", DoRAConfig)
class DoRA(LoRA):
    """LoRA with DoRA's layer; its PEFT export adds the magnitudes and ``use_dora``."""

    layer_class = DoRALayer
    peft_config_extra = {"use_dora": True}
    budget_unit = False  # LoRA's runs alone set the tables' budget unit
