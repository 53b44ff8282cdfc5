"""Dispatch (impl = auto | triton | torch | dense) and the autograd functions over (x, values)."""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import torch_ops
from .csr import CSRMatrix

IMPLS = ("auto", "triton", "torch", "dense")


@lru_cache(maxsize=None)
def triton_available() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def _triton():
    from . import triton_ops

    return triton_ops


def resolve_impl(impl: str, device) -> str:
    """'auto' -> 'triton' on CUDA when triton is importable, else 'torch'; others validated."""
    if impl not in IMPLS:
        raise ValueError(f"unknown sparse impl {impl!r}; choose one of {', '.join(IMPLS)}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if impl == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if impl == "triton":
        if not triton_available():
            raise ValueError("impl='triton' requested but triton is not importable; use 'torch' or 'dense'")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise ValueError(
                f"impl='triton' needs a CUDA device (got {device}); "
                "set TRITON_INTERPRET=1 before importing triton to run it on CPU"
            )
    return impl


def _check(values: Tensor, csr: CSRMatrix, dim: int, t: Tensor, name: str) -> None:
    if values.dim() != 1 or values.numel() != csr.nnz:
        raise ValueError(f"values must have shape ({csr.nnz},), got {tuple(values.shape)}")
    if t.shape[-1] != dim:
        raise ValueError(f"{name} last dim must be {dim} for S of shape {csr.shape}, got {tuple(t.shape)}")
    if values.device != t.device or csr.device != t.device:
        raise ValueError(f"device mismatch: values {values.device}, csr {csr.device}, {name} {t.device}")


# ------------------------------------------------------------------------------ 2-D dispatchers
def _spmm2(impl, values, csr, x2):
    if impl == "torch":
        return torch_ops.spmm(values, csr, x2)
    if impl == "triton":
        return _triton().spmm(values, csr, x2)
    return torch_ops.dense_spmm(values, csr, x2)


def _spmm_t2(impl, values, csr, g2):
    if impl == "torch":
        return torch_ops.spmm_t(values, csr, g2)
    if impl == "triton":
        return _triton().spmm_t(values, csr, g2)
    return torch_ops.dense_spmm_t(values, csr, g2)


def _sddmm2(impl, csr, g2, x2, out_dtype=None):
    if impl == "torch":
        return torch_ops.sddmm(csr, g2, x2, out_dtype)
    if impl == "triton":
        return _triton().sddmm(csr, g2, x2, out_dtype)
    return torch_ops.dense_sddmm(csr, g2, x2, out_dtype)


# --------------------------------------------------------------------------------- public raw ops
def spmm(values: Tensor, csr: CSRMatrix, x: Tensor, impl: str = "auto") -> Tensor:
    """y = x @ S^T ; x [..., m] -> [..., n] in x.dtype (fp32 accumulation). No autograd."""
    impl = resolve_impl(impl, x.device)
    n, m = csr.shape
    _check(values, csr, m, x, "x")
    y = _spmm2(impl, values.detach(), csr, x.detach().reshape(-1, m))
    return y.reshape(*x.shape[:-1], n)


def spmm_t(values: Tensor, csr: CSRMatrix, g: Tensor, impl: str = "auto") -> Tensor:
    """g @ S ; g [..., n] -> [..., m] in g.dtype (uses the transposed structure). No autograd."""
    impl = resolve_impl(impl, g.device)
    n, m = csr.shape
    _check(values, csr, n, g, "g")
    y = _spmm_t2(impl, values.detach(), csr, g.detach().reshape(-1, n))
    return y.reshape(*g.shape[:-1], m)


def sddmm(csr: CSRMatrix, g: Tensor, x: Tensor, impl: str = "auto", out_dtype: torch.dtype | None = None) -> Tensor:
    """(g^T x) sampled at the mask, [nnz] in values order; g [..., n], x [..., m] (leading dims
    flattened to T). fp32 accumulation; returns out_dtype, default fp32 (fp64 for fp64 inputs on
    the torch/dense paths). No autograd."""
    impl = resolve_impl(impl, g.device)
    n, m = csr.shape
    if g.shape[-1] != n or x.shape[-1] != m or g.shape[:-1] != x.shape[:-1]:
        raise ValueError(
            f"sddmm: g [..., {n}] and x [..., {m}] with equal leading dims expected, "
            f"got {tuple(g.shape)} and {tuple(x.shape)}"
        )
    return _sddmm2(impl, csr, g.detach().reshape(-1, n), x.detach().reshape(-1, m), out_dtype)


# ------------------------------------------------------------------------------------- autograd
class _SparseLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2: Tensor, values: Tensor, csr: CSRMatrix, impl: str) -> Tensor:
        need_x, need_v = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.csr, ctx.impl, ctx.x_dtype, ctx.values_dtype = csr, impl, x2.dtype, values.dtype
        if impl == "triton":
            tri = _triton()
            xT = tri.to_t(x2)
            y = tri.spmm_from_t(values, csr, xT, x2.dtype)
            ctx.save_for_backward(xT if need_v else None, values if need_x else None)
        else:
            y = _spmm2(impl, values, csr, x2)
            ctx.save_for_backward(x2 if need_v else None, values if need_x else None)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor):
        saved_x, values = ctx.saved_tensors
        csr, impl = ctx.csr, ctx.impl
        dx = dv = None
        need_x, need_v = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if impl == "triton":
            tri = _triton()
            gT = tri.to_t(gy)
            if need_x:
                dx = tri.spmm_t_from_t(values, csr, gT, ctx.x_dtype)
            if need_v:
                dv = tri.sddmm_from_t(csr, gT, saved_x)
        else:
            if need_x:
                dx = _spmm_t2(impl, values, csr, gy).to(ctx.x_dtype)
            if need_v:
                dv = _sddmm2(impl, csr, gy, saved_x)
        if dv is not None:
            dv = dv.to(ctx.values_dtype)
        return dx, dv, None, None


def sparse_linear(x: Tensor, values: Tensor, csr: CSRMatrix, impl: str = "auto") -> Tensor:
    """x @ S^T as one autograd op over (x, values): forward SpMM, backward dX = SpMM on S^T and
    dValues = SDDMM. x [..., m] -> [..., n] in x.dtype; grads in x.dtype / values.dtype."""
    impl = resolve_impl(impl, x.device)
    n, m = csr.shape
    _check(values, csr, m, x, "x")
    y = _SparseLinearFn.apply(x.reshape(-1, m), values, csr, impl)
    return y.reshape(*x.shape[:-1], n)


class _DensePlusSparseFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2: Tensor, weight: Tensor, values: Tensor, csr: CSRMatrix, impl: str) -> Tensor:
        need_x, need_w, need_v = ctx.needs_input_grad[:3]
        ctx.csr, ctx.impl = csr, impl
        ctx.dtypes = (x2.dtype, weight.dtype, values.dtype)
        W = torch_ops.materialise(weight, values, csr, x2.dtype)
        y = x2 @ W.t()
        del W
        # W0 + S is re-materialised in backward (as RoSA's sp_add) rather than kept alive; a 4-bit
        # weight is saved as it is (its 4-bit codes) and dequantised again there.
        ctx.save_for_backward(
            x2 if (need_w or need_v) else None, weight if need_x else None, values if need_x else None
        )
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor):
        x2, weight, values = ctx.saved_tensors
        csr, impl = ctx.csr, ctx.impl
        x_dtype, w_dtype, v_dtype = ctx.dtypes
        need_x, need_w, need_v = ctx.needs_input_grad[:3]
        dx = dw = dv = None
        if need_x:
            W = torch_ops.materialise(weight, values, csr, x_dtype)
            dx = gy.to(x_dtype) @ W
            del W
        if need_w:
            dw = (gy.t() @ x2.to(gy.dtype)).to(w_dtype)
        if need_v:
            dv = _sddmm2(impl, csr, gy, x2).to(v_dtype)
        return dx, dw, dv, None, None


def dense_plus_sparse_linear(x: Tensor, weight: Tensor, values: Tensor, csr: CSRMatrix, impl: str = "auto") -> Tensor:
    """x @ (W0 + S)^T with W0 + S materialised densely (RoSA's default 'sp_add' path) and one
    matmul in x.dtype. dX = dY (W0 + S) (re-materialised), dValues = SDDMM (backend chosen by
    ``impl``: auto -> triton on CUDA else torch), dW only if ``weight`` requires grad. No bias.
    ``weight`` may be a torchao NF4 tensor: it is dequantised in forward and again in backward, so
    only the 4-bit weight is held between them."""
    sd_impl = resolve_impl(impl, x.device)
    n, m = csr.shape
    _check(values, csr, m, x, "x")
    if tuple(weight.shape) != (n, m):
        raise ValueError(f"weight must have shape {(n, m)}, got {tuple(weight.shape)}")
    y = _DensePlusSparseFn.apply(x.reshape(-1, m), weight, values, csr, sd_impl)
    return y.reshape(*x.shape[:-1], n)
