"""Pure-PyTorch SpMM / transposed SpMM / SDDMM for a fixed CSR structure.

Main path: ``torch.sparse`` CSR kernels (MKL on CPU, cuSPARSE on CUDA), which measured 10-20x
faster than gather + ``index_add_`` or a dense matmul on CPU for RoSA densities. They are run in
fp32 (fp64 when an input is fp64), since the CPU kernels have no fp16/bf16 support; outputs are
cast back. A chunked gather fallback (``index_add_`` / gathered row products) covers devices
without sparse CSR kernels.

All functions take 2-D inputs: x [T, m], g [T, n]; values [nnz] in the row-major order of ``csr``.
Outputs of spmm / spmm_t may be non-contiguous (transposed) views.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .csr import CSRMatrix

_SPARSE_DEVICES = ("cpu", "cuda")
_GATHER_CHUNK_ELEMS = 1 << 24  # bound on the gathered [chunk, T] temporaries (elements)


def compute_dtype(*ts: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _use_sparse(device: torch.device) -> bool:
    return device.type in _SPARSE_DEVICES


def _i32(csr: CSRMatrix, name: str) -> Tensor:
    t = getattr(csr, name)
    if t.dtype == torch.int32:
        return t
    return csr.cached(("i32", name), lambda: t.to(torch.int32))


def _csr_tensor(offs: Tensor, cols: Tensor, vals: Tensor, shape) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(offs, cols, vals, shape, check_invariants=False)


def _transposed_rows(csr: CSRMatrix) -> Tensor:
    # row index (of S^T, i.e. column of S) of each transposed entry, int64
    return torch.repeat_interleave(
        torch.arange(csr.shape[1], device=csr.device),
        (csr.t_row_offsets[1:] - csr.t_row_offsets[:-1]).to(torch.int64),
        output_size=csr.nnz,
    )


# ------------------------------------------------------------------------------------------ spmm
def _spmm_generic(vals, offs_name, cols_name, rows_fn, csr, x, out_rows):
    """y[T, out_rows] = sum over entries (r, c) of vals * x[:, c] into column r."""
    T = x.shape[0]
    cd = compute_dtype(vals, x)
    if csr.nnz == 0 or T == 0:
        return torch.zeros(T, out_rows, dtype=x.dtype, device=x.device)
    vals = vals.to(cd)
    xT = x.t().to(cd)
    in_rows = x.shape[1]
    if _use_sparse(x.device):
        S = _csr_tensor(_i32(csr, offs_name), _i32(csr, cols_name), vals, (out_rows, in_rows))
        yT = S @ xT  # [out_rows, T]
    else:
        xT = xT.contiguous()
        rows, cols = rows_fn(), getattr(csr, cols_name).to(torch.int64)
        yT = torch.zeros(out_rows, T, dtype=cd, device=x.device)
        step = max(1, _GATHER_CHUNK_ELEMS // max(1, T))
        for s in range(0, csr.nnz, step):
            e = min(csr.nnz, s + step)
            yT.index_add_(0, rows[s:e], xT[cols[s:e]] * vals[s:e, None])
    return yT.t().to(x.dtype)


def spmm(values: Tensor, csr: CSRMatrix, x: Tensor) -> Tensor:
    """y = x @ S^T ; x [T, m] -> [T, n]."""
    return _spmm_generic(values, "row_offsets", "col_indices", csr.row_indices, csr, x, csr.shape[0])


def spmm_t(values: Tensor, csr: CSRMatrix, g: Tensor) -> Tensor:
    """g @ S ; g [T, n] -> [T, m] (via the CSR of S^T and ``values[t_perm]``)."""
    vt = values[csr.t_perm.to(torch.int64)] if csr.nnz else values
    return _spmm_generic(vt, "t_row_offsets", "t_col_indices", lambda: _transposed_rows(csr), csr, g, csr.shape[1])


# ----------------------------------------------------------------------------------------- sddmm
def sddmm(csr: CSRMatrix, g: Tensor, x: Tensor, out_dtype: torch.dtype | None = None) -> Tensor:
    """(g^T x) sampled at the mask, in ``values`` order; g [T, n], x [T, m] -> [nnz].

    Accumulates in fp32 (fp64 if an input is fp64); returns ``out_dtype`` or that dtype.
    """
    n, m = csr.shape
    cd = compute_dtype(g, x)
    out_dtype = out_dtype or cd
    if csr.nnz == 0 or g.shape[0] == 0:
        return torch.zeros(csr.nnz, dtype=out_dtype, device=g.device)
    gT = g.t().to(cd)
    x = x.to(cd)
    if _use_sparse(g.device):
        gT = gT.contiguous()  # MKL's sampled_addmm reads rows of gT (profile-training part 3 times both layouts)
        M = _csr_tensor(
            _i32(csr, "row_offsets"), _i32(csr, "col_indices"), torch.zeros(csr.nnz, dtype=cd, device=g.device), (n, m)
        )
        out = torch.sparse.sampled_addmm(M, gT, x, beta=0.0, alpha=1.0).values()
    else:
        gT, xT = gT.contiguous(), x.t().contiguous()
        rows, cols = csr.row_indices(), csr.col_indices.to(torch.int64)
        out = torch.empty(csr.nnz, dtype=cd, device=g.device)
        T = g.shape[0]
        step = max(1, _GATHER_CHUNK_ELEMS // max(1, T))
        for s in range(0, csr.nnz, step):
            e = min(csr.nnz, s + step)
            out[s:e] = torch.bmm(gT[rows[s:e]].unsqueeze(1), xT[cols[s:e]].unsqueeze(2)).view(-1)
    return out.to(out_dtype)


# ----------------------------------------------------------------------------------------- dense
def dense_spmm(values, csr, x):
    return x @ csr.to_dense(values.to(x.dtype)).t()


def dense_spmm_t(values, csr, g):
    return g @ csr.to_dense(values.to(g.dtype))


def dense_sddmm(csr, g, x, out_dtype=None):
    cd = compute_dtype(g, x)
    full = g.t().to(cd) @ x.to(cd)
    return full.view(-1)[csr.flat_indices()].to(out_dtype or cd)


def materialise(weight: Tensor, values: Tensor, csr: CSRMatrix, dtype: torch.dtype) -> Tensor:
    """W0 + S as a dense, contiguous tensor of ``dtype`` (a fresh copy; weight untouched). A 4-bit
    torchao NF4 ``weight`` is dequantised here, so callers can hold on to the 4-bit tensor only."""
    if hasattr(weight, "get_original_weight"):  # torchao NF4Tensor
        weight = weight.get_original_weight()
    W = weight.detach().to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
    if csr.nnz:
        W.view(-1).index_add_(0, csr.flat_indices(), values.detach().to(dtype))
    return W
