"""RoSA's layer: W0 x + s B A dropout(x) + S x, S sparse with a fixed mask (the package docstring has
the math). With rank 0 there is no LoRA branch (SpA).
"""

from __future__ import annotations

import torch
from torch import nn

from rosa.kernels import CSRMatrix, dense_plus_sparse_linear, resolve_impl, sparse_linear
from rosa.methods.base import AdaptedLayer, base_weight_for_matmul
from rosa.methods.lora import LowRankBranch

CSR_FIELDS = ("row_offsets", "col_indices", "row_order", "t_row_offsets", "t_col_indices", "t_row_order", "t_perm")


def layer_impl(impl: str, device) -> str:
    """The layer's path: as ``resolve_impl``, except that ``auto`` on CPU is ``dense``. With a dense W0
    at hand, x (W0 + S)^T costs one O(n m) copy more than the base matmul, while MKL's CSR SpMM
    (x @ S^T, output transposed) and the extra add cost ~half a LoRA layer's step (docs/profiling.md)."""
    if impl == "auto" and torch.device(device).type == "cpu":
        return "dense"
    return resolve_impl(impl, device)


def empty_csr(n: int, m: int) -> CSRMatrix:
    return CSRMatrix.from_buffers(
        {
            "row_offsets": torch.zeros(n + 1, dtype=torch.int32, device="cpu"),
            "col_indices": torch.zeros(0, dtype=torch.int32, device="cpu"),
        },
        (n, m),
    )


class RobustLayer(LowRankBranch, AdaptedLayer):
    """W0 x + s B A dropout(x) + S x. With rank 0 there is no LoRA branch (SpA)."""

    def __init__(
        self,
        base: nn.Module,
        rank: int,
        alpha: float,
        dropout: float,
        rslora: bool,
        generator: torch.Generator,
        impl: str = "auto",
    ):
        super().__init__(base)
        self.rank, self.scale = 0, 0.0
        if rank > 0:
            self.init_low_rank(rank, alpha, dropout, rslora, generator)
        self.impl = impl
        self._csr: CSRMatrix | None = None
        self.set_sparse(empty_csr(self.out_features, self.in_features))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """LoRA's init (drawn on the CPU in fp32, so a restart on GPU or in bf16 re-creates exactly
        the initial A); nothing to draw without a LoRA branch."""
        if self.rank:
            super().reset_parameters(generator)

    # -- the sparse part
    def set_sparse(self, csr: CSRMatrix) -> None:
        """Give S this structure (buffers ``sparse_*``) and fresh zero values (a new parameter)."""
        if csr.shape != (self.out_features, self.in_features):
            raise ValueError(f"mask of shape {csr.shape} for a layer of shape {(self.out_features, self.in_features)}")
        device = self.base.weight.device
        csr = csr.to(device)
        for name in CSR_FIELDS:
            self.register_buffer(f"sparse_{name}", getattr(csr, name))
        dtype = self.lora_A.dtype if self.rank else torch.float32
        self.sparse_values = nn.Parameter(torch.zeros(csr.nnz, dtype=dtype, device=device))
        self._csr = csr

    @property
    def csr(self) -> CSRMatrix:
        """The structure over the current buffers (rebuilt when ``.to()`` replaced them)."""
        if self._csr is None or self._csr.row_offsets is not self.sparse_row_offsets:
            self._csr = CSRMatrix(
                (self.out_features, self.in_features), **{name: getattr(self, f"sparse_{name}") for name in CSR_FIELDS}
            )
        return self._csr

    @property
    def nnz(self) -> int:
        return self.sparse_values.numel()

    # -- compute
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nnz == 0:
            y = self.base(x)
        elif layer_impl(self.impl, x.device) == "dense":
            y = dense_plus_sparse_linear(x, base_weight_for_matmul(self.base), self.sparse_values, self.csr)
            if self.base.bias is not None:
                y = y + self.base.bias.to(y.dtype)
        else:
            y = self.base(x)
            with torch.autocast(x.device.type, enabled=False):  # the SpMM accumulates in fp32 anyway; CPU
                s = sparse_linear(x, self.sparse_values, self.csr, self.impl)  # sparse MKL has no bf16
            y = y + s.to(y.dtype)
        if self.rank:
            y = y + self.lora_forward(x)
        return y

    def delta_weight(self) -> torch.Tensor:
        if self.rank:
            delta = super().delta_weight()
        else:
            delta = torch.zeros(self.out_features, self.in_features, device=self.sparse_values.device)
        if self.nnz:
            delta = delta + self.csr.to_dense(self.sparse_values.detach().float())
        return delta
