"""Shared test cases and float64 dense references for the sparse kernels (not a test module)."""

from __future__ import annotations

import torch

from rosa.kernels import CSRMatrix


def make_mask(kind: str, shape, density: float = 0.2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n, m = shape
    if kind == "random":
        mask = torch.rand(n, m, generator=gen) < density
        if mask.sum() == 0:
            mask[0, 0] = True
    elif kind == "empty_rows":  # every other row empty, plus one heavy row
        mask = torch.rand(n, m, generator=gen) < density
        mask[::2] = False
        mask[min(1, n - 1)] = True
    elif kind == "empty":
        mask = torch.zeros(n, m, dtype=torch.bool)
    elif kind == "full":
        mask = torch.ones(n, m, dtype=torch.bool)
    elif kind == "skewed":  # RoSA-like: nonzeros clustered in a few rows and columns
        mask = torch.zeros(n, m, dtype=torch.bool)
        mask[: max(1, n // 8)] = torch.rand(max(1, n // 8), m, generator=gen) < 0.9
        mask[:, : max(1, m // 8)] |= torch.rand(n, max(1, m // 8), generator=gen) < 0.5
    else:
        raise ValueError(kind)
    return mask


# (kind, shape): edge cases named in the brief
CASES = [
    ("random", (1, 7)),
    ("random", (33, 65)),
    ("random", (64, 130)),
    ("empty_rows", (33, 65)),
    ("empty", (16, 24)),
    ("full", (9, 17)),
    ("random", (1, 130)),  # single row
    ("random", (40, 1)),  # single column
    ("skewed", (48, 80)),
]
CASE_IDS = [f"{k}-{s[0]}x{s[1]}" for k, s in CASES]


def setup(kind, shape, dtype, T=11, seed=0, lead=None):
    """csr, values, x, g with values/x/g in ``dtype`` (already rounded), plus float64 copies."""
    mask = make_mask(kind, shape, seed=seed)
    csr = CSRMatrix.from_mask(mask)
    gen = torch.Generator().manual_seed(seed + 1)
    n, m = shape
    lead = lead or (T,)
    values = torch.randn(csr.nnz, generator=gen).to(dtype)
    x = torch.randn(*lead, m, generator=gen).to(dtype)
    g = torch.randn(*lead, n, generator=gen).to(dtype)
    return mask, csr, values, x, g


def refs(mask, values, x, g):
    """float64 dense references: x @ S^T, g @ S, (g^T x)[mask]."""
    n, m = mask.shape
    S = torch.zeros(n, m, dtype=torch.float64)
    S[mask] = values.double()
    x2 = x.double().reshape(-1, m)
    g2 = g.double().reshape(-1, n)
    return ((x2 @ S.T).reshape(*x.shape[:-1], n), (g2 @ S).reshape(*g.shape[:-1], m), (g2.T @ x2)[mask])


TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-4),
    torch.float16: dict(rtol=2e-3, atol=2e-2),
    torch.bfloat16: dict(rtol=1e-2, atol=8e-2),
}
# sddmm outputs are fp32 (fp64 for fp64 inputs): only accumulation error
SDDMM_TOL = {
    torch.float64: TOL[torch.float64],
    torch.float32: dict(rtol=1e-5, atol=1e-4),
    torch.float16: dict(rtol=1e-5, atol=1e-4),
    torch.bfloat16: dict(rtol=1e-5, atol=1e-4),
}


def close(out, ref, tol):
    torch.testing.assert_close(out.double(), ref.double(), **tol)
