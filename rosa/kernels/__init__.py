"""Sparse adapter kernels for RoSA's S (n x m = out x in, fixed mask, trainable values).

* :class:`CSRMatrix` - the fixed structure (int32 offsets, compact int16/int32 columns, rows by nnz
  descending, plus the transposed structure); values are a separate ``[nnz]`` tensor in row-major
  order of the mask.
* Raw ops (no autograd): :func:`spmm` (x @ S^T), :func:`spmm_t` (g @ S), :func:`sddmm` ((g^T x) at
  the mask).
* Autograd: :func:`sparse_linear` (x @ S^T over (x, values)) and :func:`dense_plus_sparse_linear`
  (x @ (W0 + S)^T, materialised densely, RoSA's default path).
* ``impl``: "auto" (triton on CUDA when importable, else torch), "triton", "torch", "dense".
  Triton kernels are imported lazily; on CPU they only run under ``TRITON_INTERPRET=1``.
"""

from .csr import CSRMatrix
from .ops import IMPLS, dense_plus_sparse_linear, resolve_impl, sddmm, sparse_linear, spmm, spmm_t, triton_available

__all__ = [
    "CSRMatrix",
    "IMPLS",
    "dense_plus_sparse_linear",
    "resolve_impl",
    "sddmm",
    "sparse_linear",
    "spmm",
    "spmm_t",
    "triton_available",
]
