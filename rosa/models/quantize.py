"""4-bit NormalFloat (NF4) storage of frozen base weights, as in QLoRA (Dettmers et al. 2023).

Library: torchao's ``NF4Tensor`` (pure PyTorch, so it runs the same on CPU and CUDA). A quantized
layer stays an ``nn.Linear`` whose ``weight`` is an ``NF4Tensor`` parameter (frozen); ``F.linear``
on it dequantises to the input's dtype and multiplies (torchao's ``linear_nf4``), and the backward
gives the input gradient only. ``rosa.methods.base.dense_weight`` dequantises it for the methods.

Format (per weight of n elements, bf16 compute): 4-bit codes (n/2 bytes), one int8 absmax scale per
block of 64 weights, the scales double-quantized in groups of ``scaler_block_size`` (one bf16 factor
per group) around their mean (one bf16), and the 16-entry code table.

Shapes: torchao needs n % 64 == 0 and (n / 64) % scaler_block_size == 0. QLoRA uses 256 scales per
group; when n / 64 is not a multiple of 256 (e.g. the tiny model's 192x192 projections: 576 blocks)
we take the largest divisor of n / 64 that is <= 256 (576 -> 192), which changes only the size of
the second-level groups (a few bytes), not the 4-bit format. A weight with n % 64 != 0, or whose
largest divisor is below ``MIN_SCALER_BLOCK`` (the double quantization would then cost more than it
saves), stays in bf16; ``quantize_model`` logs and counts such layers. GPT-2's Conv1D layers also
stay in bf16 (torchao's NF4 implements ``F.linear``, not Conv1D's ``addmm``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)

BLOCK_SIZE = 64  # weights per absmax block (QLoRA)
SCALER_BLOCK_SIZE = 256  # scales per double-quantization group (QLoRA)
MIN_SCALER_BLOCK = 16

_NF4 = None


def _load_torchao():
    """(NF4Tensor, to_nf4) from torchao, wherever this version keeps them; None when absent.

    New torchao (>= 0.15-ish, after pytorch/ao#4256): ``torchao.quantization``; older versions:
    ``torchao.dtypes.nf4tensor`` (``torchao.dtypes`` was removed later)."""
    global _NF4
    if _NF4 is None:
        for module in ("torchao.quantization", "torchao.dtypes.nf4tensor", "torchao.dtypes"):
            try:
                mod = __import__(module, fromlist=["NF4Tensor", "to_nf4"])
                _NF4 = (mod.NF4Tensor, mod.to_nf4)
                break
            except (ImportError, AttributeError):
                continue
        else:
            _NF4 = False
    return _NF4 or None


def require_nf4():
    found = _load_torchao()
    if found is None:
        raise RuntimeError("precision=nf4 needs torchao (pip install 'torchao>=0.10'); it is not installed")
    return found


def is_nf4(t) -> bool:
    """Whether ``t`` is a torchao NF4Tensor (checked without importing torchao)."""
    return any(c.__name__ == "NF4Tensor" for c in type(t).__mro__)


def scaler_block_size_for(numel: int, block_size: int = BLOCK_SIZE, preferred: int = SCALER_BLOCK_SIZE) -> int | None:
    """The double-quantization group size for a weight of ``numel`` elements: ``preferred`` when
    it divides the number of blocks, else the largest divisor below it; None when the weight cannot
    be stored in NF4 (numel % block_size != 0, or no divisor >= MIN_SCALER_BLOCK)."""
    if numel % block_size:
        return None
    n_blocks = numel // block_size
    for size in range(min(preferred, n_blocks), MIN_SCALER_BLOCK - 1, -1):
        if n_blocks % size == 0:
            return size
    return None


def quantize_weight(weight: torch.Tensor, block_size: int = BLOCK_SIZE, scaler_block_size: int | None = None):
    """An NF4Tensor of ``weight`` (2-D, its dtype is the compute dtype dequantisation returns)."""
    _, to_nf4 = require_nf4()
    size = scaler_block_size or scaler_block_size_for(weight.numel(), block_size)
    if size is None:
        raise ValueError(f"a weight of shape {tuple(weight.shape)} cannot be stored in NF4 with block {block_size}")
    return to_nf4(weight.detach().contiguous(), block_size, size)


def dequantize(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The dense tensor behind an NF4Tensor (or ``t`` itself), detached, in ``dtype`` if given."""
    dense = t.get_original_weight() if is_nf4(t) else t.detach()
    return dense.to(dtype) if dtype is not None else dense


@dataclass
class QuantizeReport:
    quantized: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # name -> why it stays dense
    regrouped: dict[str, int] = field(default_factory=dict)  # name -> scaler block size != 256

    def summary(self) -> str:
        line = f"nf4: {len(self.quantized)} linear layers quantized, {len(self.kept)} kept dense"
        if self.regrouped:
            sizes = sorted(set(self.regrouped.values()))
            line += f", {len(self.regrouped)} with scaler block {sizes} instead of {SCALER_BLOCK_SIZE}"
        if self.kept:
            reasons = sorted(set(self.kept.values()))
            line += f" ({'; '.join(reasons)})"
        return line


def quantize_model(model: nn.Module, block_size: int = BLOCK_SIZE, skip_head: bool = True) -> QuantizeReport:
    """Store every nn.Linear weight of ``model`` except the output head in NF4 (in place, frozen).

    Embeddings, norms, biases and the head stay in their dtype (QLoRA). Call it after the model is
    on its device (quantizing on the GPU is much faster) and before ``Method.prepare``."""
    require_nf4()
    head = model.get_output_embeddings() if skip_head and hasattr(model, "get_output_embeddings") else None
    report = QuantizeReport()
    for name, module in model.named_modules():
        if module is head:
            continue
        if type(module).__name__ == "Conv1D":
            report.kept[name] = "Conv1D layers are not supported by torchao NF4"
            continue
        if not isinstance(module, nn.Linear) or is_nf4(module.weight):
            continue
        size = scaler_block_size_for(module.weight.numel(), block_size)
        if size is None:
            report.kept[name] = f"numel not divisible into blocks of {block_size}"
            continue
        if size != SCALER_BLOCK_SIZE:
            report.regrouped[name] = size
        module.weight = nn.Parameter(quantize_weight(module.weight, block_size, size), requires_grad=False)
        report.quantized.append(name)
    for name, why in report.kept.items():
        log.info("nf4: %s stays %s (%s)", name, next(iter(model.get_submodule(name).parameters())).dtype, why)
    log.info(report.summary())
    return report


def dequantize_model(model: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Replace every NF4 weight by a dense frozen parameter (its compute dtype unless ``dtype``);
    returns how many were replaced."""
    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and is_nf4(weight):
            module.weight = nn.Parameter(dequantize(weight, dtype), requires_grad=False)
            count += 1
    return count


# --------------------------------------------------------------------------- memory
def tensor_bytes(t: torch.Tensor) -> int:
    """Real storage bytes of ``t``: the sum of an NF4Tensor's inner tensors, else numel * itemsize."""
    if is_nf4(t):
        return sum(
            getattr(t, n).numel() * getattr(t, n).element_size()
            for n in ("quantized_data", "quantized_scalers", "quantization_factor", "scaler_mean", "nf4")
        )
    return t.numel() * t.element_size()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers of ``model`` (each tensor once), NF4 at its real size."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total


def nf4_bytes(shape, block_size: int = BLOCK_SIZE, scaler_block_size: int | None = None, compute_bytes: int = 2) -> int:
    """Analytic NF4 bytes of a weight of ``shape`` (torchao layout): 4 bits per weight, an int8 scale
    per block, a ``compute_bytes`` factor per scale group, the mean and the 16-entry table."""
    n = math.prod(shape)
    size = scaler_block_size or scaler_block_size_for(n, block_size)
    if size is None:
        return n * compute_bytes
    n_blocks = n // block_size
    return n // 2 + n_blocks + (n_blocks // size) * compute_bytes + compute_bytes + 16 * compute_bytes
