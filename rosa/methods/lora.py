"""LoRA: low-rank adaptation (Hu et al. 2021, arXiv 2106.09685).

For a frozen linear layer W0 (out x in) LoRA trains two factors A (r x in) and B (out x r)::

    y = W0 x + s * B A dropout(x) (+ bias),     s = alpha / r   (rsLoRA: alpha / sqrt(r))

A is initialised kaiming-uniform with a = sqrt(5) (nn.Linear's default), B = 0, so training starts
from the pretrained function. Merging adds s * B A to W0. Dropout acts on the LoRA input only.

A plain frozen nn.Linear base (no autocast, one dtype) runs with its branch as one autograd function
(``_LowRankLinear``), with or without dropout: the GEMM adds the rank-r product into the base output
itself (``addmm_``, beta = 1), and in backward the branch's input gradient into the base's, which saves
the [tokens, out] add of ``base(x) + branch(x)`` and autograd's [tokens, in] sum of the two input
gradients (on CPU, fp32, no dropout: a 576 -> 1536 layer's forward + backward over 2616 tokens
78 -> 66 ms, the base alone 55 ms). With dropout it draws the same mask (``keep_mask``, below) from
the same generator, applies it by ``torch.where`` (x * bool_mask converts the mask to float first,
~1.5x the time) and folds 1 / (1 - p) into the rank-r scale (2048 tokens, one thread, p = 0.05,
forward + backward: 576 -> 1536 64 -> 52 ms, 1536 -> 576 77 -> 62 ms; a SmolLM2-135M step at
micro-batch 8, lora r=16: 14.0 -> 13.1 s).

Other bases (Conv1D, 4-bit, a trained base, autocast, mixed dtypes) keep the composition
``base(x) + branch``; with dropout the branch is ``_DropoutLowRank``, the same function as
dropout -> A -> s -> B with three savings:
- the mask (``keep_mask``): an independent Bernoulli(1 - p) per element, as ``nn.Dropout``; on CPU
  drawn as 32-bit integers by numpy's PCG64 (seeded from torch's global generator, so a seed and a
  resumed RNG state repeat it) and compared with p * 2^32, ~3x cheaper than torch's CPU sampler
  (on GPU: ``torch.rand >= p``);
- 1 / (1 - p) is folded into the rank-r scale, not applied to the [tokens, in] input;
- backward keeps the 1-byte mask and the layer input (shared by q/k/v and gate/up) and recomputes
  the dropped input, where autograd would keep a dropped float copy per layer.
Gradients equal the plain composition's (tests/methods/test_lora.py).

The adapter is saved in our own format (``adapter.safetensors`` + ``adapter.json``) and in HF PEFT's
(``adapter_config.json`` + ``adapter_model.safetensors`` with PEFT's key names), so that
``peft.PeftModel.from_pretrained(base, dir)`` loads it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from rosa.methods.base import (
    AdaptedLayer,
    Method,
    MethodConfig,
    adapted_layers,
    is_conv1d,
    register,
    wrap_target_modules,
)
from rosa.schema import TARGET_MODULES, at_least_1, positive, probability


@dataclass(kw_only=True)
class LoRAConfig(MethodConfig):
    """Keys of ``conf/fnmodel/lora.yaml`` (their defaults and meaning are there)."""

    name: str
    rank: int = field(metadata=at_least_1)
    alpha: float = field(metadata=positive)
    dropout: float = field(metadata=probability)
    rslora: bool
    target_modules: Any = field(metadata=TARGET_MODULES)


def lora_scale(rank: int, alpha: float, rslora: bool) -> float:
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A bool mask, each element True with probability 1 - p (to 2^-32), independently."""
    if device.type != "cpu":
        return torch.rand(shape, device=device) >= p
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))  # from torch's (checkpointed) generator
    bits = np.random.PCG64(seed).random_raw((math.prod(shape) + 1) // 2).view(np.uint32)[: math.prod(shape)]
    return torch.from_numpy(bits >= np.uint32(round(p * 2**32))).view(shape)


class _DropoutLowRank(torch.autograd.Function):
    """y = s * (dropout_p(x) A^T) B^T, saving (x, mask, A, B, x_drop A^T) rather than the dropped x.
    Computes in the autocast dtype when autocast is on (as F.linear would), else in A's dtype; the
    gradients come back in each input's own dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, p: float, scale: float) -> torch.Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else a.dtype
        scale = scale / (1.0 - p)  # dropout's 1/(1-p), at rank r
        ctx.dtypes, ctx.scale, ctx.device = (x.dtype, a.dtype, b.dtype), scale, device
        with torch.autocast(device, enabled=False):
            x, a, b = x.to(dtype), a.to(dtype), b.to(dtype)
            keep = keep_mask(x.shape, p, x.device)
            low = F.linear(x * keep, a) * scale  # [..., r]
            ctx.save_for_backward(x, keep, a, b, low)
            return F.linear(low, b)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, keep, a, b, low = ctx.saved_tensors
        x_dtype, a_dtype, b_dtype = ctx.dtypes
        grad_x = grad_a = grad_b = None
        with torch.autocast(ctx.device, enabled=False):
            grad_y = grad_y.to(b.dtype)
            grad_low = (grad_y @ b) * ctx.scale  # [..., r]
            if ctx.needs_input_grad[2]:
                grad_b = (grad_y.flatten(0, -2).t() @ low.flatten(0, -2)).to(b_dtype)
            if ctx.needs_input_grad[1]:  # the dropped input, recomputed
                grad_a = (grad_low.flatten(0, -2).t() @ (x * keep).flatten(0, -2)).to(a_dtype)
            if ctx.needs_input_grad[0]:
                grad_x = ((grad_low @ a) * keep).to(x_dtype)
        return grad_x, grad_a, grad_b, None, None


class _LowRankLinear(torch.autograd.Function):
    """y = x W^T (+ bias) + (s d(x) A^T) B^T for a frozen W, all in one dtype, d = dropout_p (the
    identity when p = 0): the low-rank product is accumulated into the base output by the GEMM
    (``addmm_``), and backward's grad_x = g W + d'((s g B) A) likewise, so neither sum costs a pass
    over [tokens, features] of its own. A bias gradient is returned when the bias requires one.

    With dropout the mask is ``keep_mask`` (the same draw as ``_DropoutLowRank``'s), applied as
    ``torch.where(keep, x, 0)`` (no bool -> float copy); backward keeps x (shared by q/k/v and
    gate/up) and the 1-byte mask and recomputes the dropped input for grad_A, and masks the rank-r
    input gradient in place before g W is added by the GEMM. Keeping a dropped float copy (and a
    float mask) per layer instead was slower over a whole step: more memory to fault in."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: float,
        p: float = 0.0,
    ) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        keep = None
        if p > 0:
            keep = keep_mask(x.shape, p, x.device).view(x2.shape)
            scale = scale / (1.0 - p)  # dropout's 1/(1-p), at rank r
        x_low = x2 if keep is None else torch.where(keep, x2, 0.0)
        low = torch.mm(x_low, a.t())  # [tokens, r]
        if scale != 1.0:
            low.mul_(scale)
        y = torch.mm(x2, weight.t()) if bias is None else torch.addmm(bias, x2, weight.t())
        y.addmm_(low, b.t())
        ctx.save_for_backward(x2, keep, weight, a, b, low)
        ctx.scale, ctx.x_shape = scale, x.shape
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x2, keep, weight, a, b, low = ctx.saved_tensors
        g = grad_y.reshape(-1, grad_y.shape[-1])
        grad_low = torch.mm(g, b)  # [tokens, r]
        if ctx.scale != 1.0:
            grad_low.mul_(ctx.scale)
        grad_x = grad_bias = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            if keep is None:
                grad_x = torch.mm(g, weight).addmm_(grad_low, a)
            else:
                grad_x = torch.mm(grad_low, a).masked_fill_(~keep, 0.0).addmm_(g, weight)
            grad_x = grad_x.view(ctx.x_shape)
        if ctx.needs_input_grad[2]:
            grad_bias = g.sum(0)
        if ctx.needs_input_grad[3]:
            grad_a = grad_low.t().mm(x2 if keep is None else torch.where(keep, x2, 0.0))
        if ctx.needs_input_grad[4]:
            grad_b = g.t().mm(low)
        return grad_x, None, grad_bias, grad_a, grad_b, None, None


class LowRankBranch:
    """LoRA's branch ``s B A dropout(x)`` on an AdaptedLayer (a mixin: LoRA's layer, and RoSA's when
    its rank is above 0). ``init_low_rank`` registers ``lora_A`` (r x in) and ``lora_B`` (out x r)."""

    def init_low_rank(self, rank: int, alpha: float, dropout: float, rslora: bool, generator: torch.Generator) -> None:
        self.rank = rank
        self.scale = lora_scale(rank, alpha, rslora)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank))
        self.dropout = dropout
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """A kaiming-uniform(a=sqrt 5), B = 0. A is drawn into an fp32 CPU tensor from the (CPU)
        ``generator`` and then copied, so a seed gives the same A on every device and dtype."""
        with torch.no_grad():
            initial_a = torch.empty(self.lora_A.shape)
            nn.init.kaiming_uniform_(initial_a, a=math.sqrt(5), generator=generator)
            self.lora_A.copy_(initial_a)
            self.lora_B.zero_()

    def lora_forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(self.lora_A.dtype)
        if self.training and self.dropout > 0:
            return _DropoutLowRank.apply(h, self.lora_A, self.lora_B, self.dropout, self.scale).to(x.dtype)
        # scale the rank-r intermediate, not the [tokens, out] output: one multiply r/out the size
        # (forward and backward); same function up to float rounding
        return F.linear(F.linear(h, self.lora_A) * self.scale, self.lora_B).to(x.dtype)

    def delta_weight(self) -> torch.Tensor:
        return self.scale * (self.lora_B.float() @ self.lora_A.float())


class LoRALayer(LowRankBranch, AdaptedLayer):
    def __init__(
        self, base: nn.Module, rank: int, alpha: float, dropout: float, rslora: bool, generator: torch.Generator
    ):
        super().__init__(base)
        self.init_low_rank(rank, alpha, dropout, rslora, generator)

    def fused_path(self, x: torch.Tensor) -> bool:
        """Whether ``_LowRankLinear`` computes this call (with or without dropout): a plain frozen
        nn.Linear base (not 4-bit), no autocast, one dtype throughout."""
        base, weight = self.base, self.base.weight
        return (
            type(base) is nn.Linear
            and type(weight) in (torch.Tensor, nn.Parameter)
            and not weight.requires_grad
            and (base.bias is None or not base.bias.requires_grad)
            and not torch.is_autocast_enabled(x.device.type)
            and x.dtype == weight.dtype == self.lora_A.dtype == self.lora_B.dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_path(x):
            p = self.dropout if self.training else 0.0
            return _LowRankLinear.apply(x, self.base.weight, self.base.bias, self.lora_A, self.lora_B, self.scale, p)
        return self.base(x) + self.lora_forward(x)

    def peft_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """This layer's tensors under HF PEFT's key names (``prefix``: ``base_model.model.<layer>``)."""
        return {
            f"{prefix}.lora_A.weight": self.lora_A.detach().float().contiguous().cpu(),
            f"{prefix}.lora_B.weight": self.lora_B.detach().float().contiguous().cpu(),
        }


@register("lora", LoRAConfig)
class LoRA(Method):
    budget_unit = True  # tables count other methods' budgets in LoRA ranks
    layer_class: type[LoRALayer] = LoRALayer  # a variant (DoRA) changes the layer and keeps the rest
    peft_config_extra: dict = {}  # fields it adds to PEFT's LoraConfig (DoRA: use_dora)

    def prepare(self, model: nn.Module) -> nn.Module:
        cfg = self.cfg
        self.target_names = wrap_target_modules(
            model,
            cfg.target_modules,
            lambda base, _: self.layer_class(
                base, int(cfg.rank), float(cfg.alpha), float(cfg.dropout), bool(cfg.rslora), self.generator
            ),
        )
        return model

    def save_adapter(
        self, model: nn.Module, directory: Path, extra_config: dict | None = None, tensors: dict | None = None
    ) -> None:
        super().save_adapter(model, directory, extra_config, tensors)
        save_peft_adapter(
            model, Path(directory), self.cfg, (extra_config or {}).get("base_model"), self.peft_config_extra
        )


def save_peft_adapter(
    model: nn.Module, directory: Path, cfg, base_model: str | None, extra: dict | None = None
) -> None:
    """Write the LoRA layers of ``model`` in HF PEFT's on-disk format (``extra``: more LoraConfig fields)."""
    layers = {n: m for n, m in adapted_layers(model).items() if isinstance(m, LoRALayer)}
    tensors = {}
    for name, layer in layers.items():
        tensors.update(layer.peft_tensors(f"base_model.model.{name}"))
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    fan_in_fan_out = any(is_conv1d(layer.base) for layer in layers.values())
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": int(cfg.rank),
        "lora_alpha": float(cfg.alpha),
        "lora_dropout": float(cfg.dropout),
        "use_rslora": bool(cfg.rslora),
        "target_modules": sorted(layers),
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        **(extra or {}),
    }
    (directory / "adapter_config.json").write_text(json.dumps(peft_config, indent=2))
