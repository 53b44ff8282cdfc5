"""Triton SpMM / SDDMM kernels for a fixed CSR structure (our own kernels).

Layout: the dense operands are used transposed and contiguous ("token-minor"): xT [m, T], gT [n, T],
so that gathering a column of x by a CSR column index reads a contiguous run of tokens.

* SpMM: one program per (CSR row, block of BLOCK_T tokens). Rows are visited in ``row_order`` (nnz
  descending) so that heavy rows start first. The program walks the row's nonzeros in chunks of
  BLOCK_NZ, gathers the matching rows of the transposed source, and accumulates in fp32. Output
  is written straight into the [T, rows] result (strided). Empty rows write zeros.
* Transposed SpMM (g @ S): the same kernel on the CSR of S^T with ``values[t_perm]``.
* SDDMM: one program per block of BLOCK_NZ nonzeros of one row (a work list built once per
  structure, heaviest rows first), reducing over tokens in blocks of BLOCK_T, fp32 accumulation.

Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests; no bf16 there).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from .csr import CSRMatrix


@triton.jit
def _spmm_kernel(
    vals_ptr,
    offs_ptr,
    cols_ptr,
    order_ptr,
    src_ptr,
    out_ptr,
    T,
    stride_src_k,
    stride_src_t,
    stride_out_t,
    stride_out_r,
    BLOCK_T: tl.constexpr,
    BLOCK_NZ: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_t = tl.program_id(1)
    row = tl.load(order_ptr + pid_r).to(tl.int64)
    start = tl.load(offs_ptr + row)
    end = tl.load(offs_ptr + row + 1)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    t_ok = t < T
    t64 = t.to(tl.int64)
    acc = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for j0 in range(start, end, BLOCK_NZ):
        j = j0 + tl.arange(0, BLOCK_NZ)
        j_ok = j < end
        c = tl.load(cols_ptr + j, mask=j_ok, other=0).to(tl.int64)
        v = tl.load(vals_ptr + j, mask=j_ok, other=0.0).to(tl.float32)
        xs = tl.load(
            src_ptr + c[:, None] * stride_src_k + t64[None, :] * stride_src_t,
            mask=j_ok[:, None] & t_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(xs * v[:, None], axis=0)
    tl.store(out_ptr + t64 * stride_out_t + row * stride_out_r, acc.to(out_ptr.dtype.element_ty), mask=t_ok)


@triton.jit
def _sddmm_kernel(
    blk_row_ptr,
    blk_start_ptr,
    offs_ptr,
    cols_ptr,
    a_ptr,
    b_ptr,
    out_ptr,
    T,
    stride_a_r,
    stride_a_t,
    stride_b_k,
    stride_b_t,
    BLOCK_T: tl.constexpr,
    BLOCK_NZ: tl.constexpr,
):
    pid = tl.program_id(0)
    row = tl.load(blk_row_ptr + pid).to(tl.int64)
    start = tl.load(blk_start_ptr + pid)
    end = tl.load(offs_ptr + row + 1)
    j = start + tl.arange(0, BLOCK_NZ)
    j_ok = j < end
    c = tl.load(cols_ptr + j, mask=j_ok, other=0).to(tl.int64)
    acc = tl.zeros((BLOCK_NZ,), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        t_ok = t < T
        t64 = t.to(tl.int64)
        a = tl.load(a_ptr + row * stride_a_r + t64 * stride_a_t, mask=t_ok, other=0.0).to(tl.float32)
        b = tl.load(
            b_ptr + c[:, None] * stride_b_k + t64[None, :] * stride_b_t, mask=j_ok[:, None] & t_ok[None, :], other=0.0
        ).to(tl.float32)
        acc += tl.sum(b * a[None, :], axis=1)
    tl.store(out_ptr + j, acc, mask=j_ok)


# ------------------------------------------------------------------------------------ helpers
def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_device(*ts: Tensor) -> None:
    for t in ts:
        if t.device.type != "cuda" and not _interpreting():
            raise RuntimeError("impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests)")


def _block_t(T: int) -> int:
    return max(16, min(128, triton.next_power_of_2(max(1, T))))


SPMM_BLOCK_NZ = 32
SDDMM_BLOCK_NZ = 32
SDDMM_BLOCK_T = 64


def _sddmm_work(csr: CSRMatrix, block_nz: int):
    """(block_row int32, block_start int32): blocks of <= block_nz nonzeros, heaviest rows first."""

    def build():
        counts = csr.row_counts()
        order = csr.row_order.to(torch.int64)
        nblk = (counts[order] + block_nz - 1) // block_nz
        total = int(nblk.sum())
        blk_row = torch.repeat_interleave(order, nblk, output_size=total)
        first = torch.cumsum(nblk, 0) - nblk
        k = torch.arange(total, device=csr.device) - torch.repeat_interleave(first, nblk, output_size=total)
        blk_start = csr.row_offsets.to(torch.int64)[blk_row] + k * block_nz
        return blk_row.to(torch.int32), blk_start.to(torch.int32)

    return csr.cached(("sddmm_work", block_nz, str(csr.device)), build)


def _spmm_launch(vals, offs, cols, order, srcT: Tensor, out: Tensor) -> Tensor:
    """out[T, R] (any strides) = for each row r: sum_j vals[j] * srcT[cols[j], :]."""
    R = offs.numel() - 1
    T = srcT.shape[1]
    if R == 0 or T == 0:
        return out
    grid = (R, triton.cdiv(T, _block_t(T)))
    _spmm_kernel[grid](
        vals,
        offs,
        cols,
        order,
        srcT,
        out,
        T,
        srcT.stride(0),
        srcT.stride(1),
        out.stride(0),
        out.stride(1),
        BLOCK_T=_block_t(T),
        BLOCK_NZ=SPMM_BLOCK_NZ,
    )
    return out


# --------------------------------------------------------------------------- transposed-input API
def _spmm_rows(values: Tensor, row_offsets, col_indices, row_order, srcT: Tensor, n_rows: int, out_dtype) -> Tensor:
    """[T, n_rows] = (sparse [n_rows, k] @ srcT [k, T])^T for one CSR structure (plain or transposed)."""
    _check_device(values, srcT)
    out = torch.empty(srcT.shape[1], n_rows, dtype=out_dtype, device=srcT.device)
    if values.numel() == 0:
        return out.zero_()
    return _spmm_launch(values.contiguous(), row_offsets, col_indices, row_order, srcT, out)


def spmm_from_t(values: Tensor, csr: CSRMatrix, xT: Tensor, out_dtype) -> Tensor:
    """x @ S^T given xT [m, T] -> [T, n] (contiguous)."""
    return _spmm_rows(values, csr.row_offsets, csr.col_indices, csr.row_order, xT, csr.shape[0], out_dtype)


def spmm_t_from_t(values: Tensor, csr: CSRMatrix, gT: Tensor, out_dtype) -> Tensor:
    """g @ S given gT [n, T] -> [T, m] (contiguous): the same kernel on the transposed structure."""
    return _spmm_rows(
        values[csr.t_perm.to(torch.int64)],
        csr.t_row_offsets,
        csr.t_col_indices,
        csr.t_row_order,
        gT,
        csr.shape[1],
        out_dtype,
    )


def sddmm_from_t(csr: CSRMatrix, gT: Tensor, xT: Tensor) -> Tensor:
    """(g^T x) at the mask given gT [n, T], xT [m, T] -> fp32 [nnz]."""
    _check_device(gT, xT)
    T = gT.shape[1]
    out = torch.zeros(csr.nnz, dtype=torch.float32, device=gT.device)
    if csr.nnz == 0 or T == 0:
        return out
    blk_row, blk_start = _sddmm_work(csr, SDDMM_BLOCK_NZ)
    block_t = min(SDDMM_BLOCK_T, _block_t(T))
    _sddmm_kernel[(blk_row.numel(),)](
        blk_row,
        blk_start,
        csr.row_offsets,
        csr.col_indices,
        gT,
        xT,
        out,
        T,
        gT.stride(0),
        gT.stride(1),
        xT.stride(0),
        xT.stride(1),
        BLOCK_T=block_t,
        BLOCK_NZ=SDDMM_BLOCK_NZ,
    )
    return out


def to_t(a: Tensor) -> Tensor:
    """[T, k] -> contiguous [k, T]."""
    return a.t().contiguous()


# ------------------------------------------------------------------------------- 2-D public API
def spmm(values: Tensor, csr: CSRMatrix, x: Tensor) -> Tensor:
    return spmm_from_t(values, csr, to_t(x), x.dtype)


def spmm_t(values: Tensor, csr: CSRMatrix, g: Tensor) -> Tensor:
    return spmm_t_from_t(values, csr, to_t(g), g.dtype)


def sddmm(csr: CSRMatrix, g: Tensor, x: Tensor, out_dtype=None) -> Tensor:
    out = sddmm_from_t(csr, to_t(g), to_t(x))
    return out if out_dtype is None else out.to(out_dtype)
