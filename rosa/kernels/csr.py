"""Structure of RoSA's sparse adapter S (n x m = out x in): a fixed CSR mask without values.

The trainable values live elsewhere (an ``nn.Parameter`` of shape ``[nnz]``); their order is the
row-major order of the mask's nonzeros. The transposed structure (CSR of S^T) is stored alongside,
with ``t_perm`` mapping each transposed entry to its position in ``values`` (so ``values[t_perm]``
are the values of S^T in its own row-major order).

Index dtypes follow RoSA's spops conventions: int32 row offsets, compact column indices (int16
when the indexed dimension fits, else int32), and a row order sorted by nnz descending for load
balancing.

Why our own structure and not ``torch.sparse_csr_tensor``: the Triton kernels need the nnz-ordered
rows, the stored transpose with its value permutation (SDDMM and the backward SpMM read S^T without
re-sorting each step) and int16 columns, none of which torch's CSR tensor carries; and the values
must stay one dense ``nn.Parameter`` for the optimizer, apart from the fixed structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

INT16_MAX_DIM = 32767  # int16 indices are used when the indexed dimension is <= this

_FIELDS = ("row_offsets", "col_indices", "row_order", "t_row_offsets", "t_col_indices", "t_row_order", "t_perm")


def _index_dtype(dim: int) -> torch.dtype:
    return torch.int16 if dim <= INT16_MAX_DIM else torch.int32


def _offsets(counts: Tensor) -> Tensor:
    offs = torch.zeros(counts.numel() + 1, dtype=torch.int32, device=counts.device)
    if counts.numel():
        offs[1:] = torch.cumsum(counts, 0).to(torch.int32)
    return offs


def _order(counts: Tensor) -> Tensor:
    # rows sorted by nnz descending; stable so that ties keep ascending row index
    return torch.argsort(-counts.to(torch.int64), stable=True).to(torch.int32)


def _transpose(row_offsets: Tensor, col_indices: Tensor, shape: tuple[int, int]):
    """CSR structure of S^T from that of S: (t_row_offsets, t_col_indices, t_row_order, t_perm)."""
    n, m = shape
    counts = row_offsets[1:].to(torch.int64) - row_offsets[:-1].to(torch.int64)
    rows = torch.repeat_interleave(torch.arange(n, device=row_offsets.device), counts)
    cols = col_indices.to(torch.int64)
    # entries are row-major (row ascending, col ascending within a row): a stable sort by column
    # gives column-major order, i.e. the row-major order of S^T.
    t_perm = torch.argsort(cols, stable=True)
    t_counts = (
        torch.bincount(cols, minlength=m) if cols.numel() else torch.zeros(m, dtype=torch.int64, device=cols.device)
    )
    return (_offsets(t_counts), rows[t_perm].to(_index_dtype(n)), _order(t_counts), t_perm.to(torch.int32))


@dataclass(eq=False)
class CSRMatrix:
    """Fixed sparsity structure of S (shape ``(n_rows, n_cols)`` = ``(out, in)``), no values."""

    shape: tuple[int, int]
    row_offsets: Tensor  # int32 [n+1]
    col_indices: Tensor  # int16/int32 [nnz]
    row_order: Tensor  # int32 [n], rows by nnz descending
    t_row_offsets: Tensor  # int32 [m+1]
    t_col_indices: Tensor  # int16/int32 [nnz] (row indices of S)
    t_row_order: Tensor  # int32 [m]
    t_perm: Tensor  # int32 [nnz]: position in `values` of each transposed entry
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_mask(cls, mask: Tensor) -> "CSRMatrix":
        if mask.dim() != 2:
            raise ValueError(f"mask must be 2-D (out x in), got shape {tuple(mask.shape)}")
        n, m = (int(s) for s in mask.shape)
        mask = mask.detach() != 0
        if mask.sum() >= 2**31:
            raise ValueError("nnz >= 2**31 does not fit int32 row offsets")
        cols = mask.nonzero(as_tuple=True)[1]  # row-major order
        counts = mask.sum(1)
        row_offsets = _offsets(counts)
        col_indices = cols.to(_index_dtype(m))
        return cls((n, m), row_offsets, col_indices, _order(counts), *_transpose(row_offsets, col_indices, (n, m)))

    @classmethod
    def from_buffers(cls, d: dict[str, Tensor], shape) -> "CSRMatrix":
        """Inverse of :meth:`buffers`. The transposed fields may be absent (they are rebuilt)."""
        n, m = (int(s) for s in shape)
        missing = [k for k in _FIELDS[:2] if k not in d]
        if missing:
            raise KeyError(f"CSRMatrix.from_buffers: missing {missing}")
        row_offsets = d["row_offsets"].to(torch.int32)
        col_indices = d["col_indices"].to(_index_dtype(m))
        if row_offsets.numel() != n + 1 or int(row_offsets[-1]) != col_indices.numel():
            raise ValueError(
                f"CSRMatrix.from_buffers: row_offsets ({row_offsets.numel()}) / col_indices "
                f"({col_indices.numel()}) inconsistent with shape {(n, m)}"
            )
        counts = row_offsets[1:] - row_offsets[:-1]
        row_order = d["row_order"].to(torch.int32) if "row_order" in d else _order(counts)
        if all(k in d for k in _FIELDS[3:]):
            t = (
                d["t_row_offsets"].to(torch.int32),
                d["t_col_indices"].to(_index_dtype(n)),
                d["t_row_order"].to(torch.int32),
                d["t_perm"].to(torch.int32),
            )
        else:
            t = _transpose(row_offsets, col_indices, (n, m))
        return cls((n, m), row_offsets, col_indices, row_order, *t)

    def buffers(self) -> dict[str, Tensor]:
        """The structure as a flat dict of int tensors (e.g. for safetensors next to the values)."""
        return {k: getattr(self, k) for k in _FIELDS}

    def to(self, device=None, non_blocking: bool = False) -> "CSRMatrix":
        if device is None or torch.device(device) == self.device:
            return self
        return CSRMatrix(self.shape, *(getattr(self, k).to(device, non_blocking=non_blocking) for k in _FIELDS))

    # ----------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.row_offsets.device

    @property
    def nnz(self) -> int:
        return int(self.col_indices.numel())

    @property
    def density(self) -> float:
        n, m = self.shape
        return self.nnz / max(1, n * m)

    def row_counts(self) -> Tensor:
        return (self.row_offsets[1:] - self.row_offsets[:-1]).to(torch.int64)

    def row_indices(self) -> Tensor:
        """int64 [nnz]: the row of each nonzero (row-major order)."""
        return torch.repeat_interleave(
            torch.arange(self.shape[0], device=self.device), self.row_counts(), output_size=self.nnz
        )

    def flat_indices(self) -> Tensor:
        """int64 [nnz]: row * n_cols + col of each nonzero."""
        return self.row_indices() * self.shape[1] + self.col_indices.to(torch.int64)

    def cached(self, key, fn):
        """Per-structure cache for derived tensors (e.g. int32 copies of indices)."""
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = fn()
        return v

    # ----------------------------------------------------------------------------- dense views
    def to_dense(self, values: Tensor) -> Tensor:
        """Dense S (n x m) in values.dtype; differentiable w.r.t. ``values``."""
        if values.shape != (self.nnz,):
            raise ValueError(f"values must have shape ({self.nnz},), got {tuple(values.shape)}")
        n, m = self.shape
        out = torch.zeros(n * m, dtype=values.dtype, device=values.device)
        out = out.index_put((self.flat_indices().to(values.device),), values)
        return out.view(n, m)

    def mask(self) -> Tensor:
        n, m = self.shape
        out = torch.zeros(n * m, dtype=torch.bool, device=self.device)
        out[self.flat_indices()] = True
        return out.view(n, m)

    def __repr__(self) -> str:
        return (
            f"CSRMatrix(shape={self.shape}, nnz={self.nnz}, density={self.density:.4%}, "
            f"col_dtype={self.col_indices.dtype}, device={self.device})"
        )
