"""Triton kernels under the interpreter (CPU). Not collected directly: test_triton_interp.py runs
this file in a subprocess with TRITON_INTERPRET=1 (it must be set before triton is imported)."""

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs TRITON_INTERPRET=1 set before triton is imported", allow_module_level=True)
triton = pytest.importorskip("triton")

from rosa.kernels import dense_plus_sparse_linear, sddmm, sparse_linear, spmm, spmm_t, triton_ops  # noqa: E402
from tests.kernels._cases import CASE_IDS, CASES, SDDMM_TOL, TOL, close, refs, setup  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("kind,shape", CASES, ids=CASE_IDS)
def test_triton_ops_vs_dense_reference(kind, shape, dtype):
    mask, csr, v, x, g = setup(kind, shape, dtype, T=11)
    y_ref, gx_ref, dv_ref = refs(mask, v, x, g)
    y = spmm(v, csr, x, impl="triton")
    assert y.dtype == dtype
    close(y, y_ref, TOL[dtype])
    gx = spmm_t(v, csr, g, impl="triton")
    assert gx.dtype == dtype
    close(gx, gx_ref, TOL[dtype])
    dv = sddmm(csr, g, x, impl="triton")
    assert dv.dtype == torch.float32
    close(dv, dv_ref, SDDMM_TOL[dtype])


@pytest.mark.parametrize("kind,shape", [("skewed", (48, 80)), ("empty_rows", (33, 65))])
def test_triton_multiple_token_blocks(kind, shape):
    """T > BLOCK_T (several token blocks in SpMM, several reduction steps in SDDMM), not a multiple."""
    mask, csr, v, x, g = setup(kind, shape, torch.float32, T=150)
    y_ref, gx_ref, dv_ref = refs(mask, v, x, g)
    close(spmm(v, csr, x, "triton"), y_ref, TOL[torch.float32])
    close(spmm_t(v, csr, g, "triton"), gx_ref, TOL[torch.float32])
    close(sddmm(csr, g, x, "triton"), dv_ref, SDDMM_TOL[torch.float32])


def test_triton_mixed_dtypes():
    mask, csr, v, x, g = setup("random", (33, 65), torch.float16)
    v32 = v.float()  # fp32 values, fp16 activations -> fp16 outputs
    y_ref, gx_ref, _ = refs(mask, v32, x, g)
    close(spmm(v32, csr, x, "triton"), y_ref, TOL[torch.float16])
    close(spmm_t(v32, csr, g, "triton"), gx_ref, TOL[torch.float16])


def test_sddmm_work_list():
    mask, csr, *_ = setup("skewed", (48, 80), torch.float32)
    blk_row, blk_start = triton_ops._sddmm_work(csr, 32)
    counts = csr.row_counts()
    assert blk_row.numel() == int(((counts + 31) // 32).sum())
    covered = torch.zeros(csr.nnz, dtype=torch.int64)
    offs = csr.row_offsets.long()
    for r, s in zip(blk_row.tolist(), blk_start.tolist()):
        assert offs[r] <= s < offs[r + 1]
        covered[s : min(s + 32, int(offs[r + 1]))] += 1
    assert torch.equal(covered, torch.ones_like(covered))
    # heaviest rows first
    assert counts[blk_row[0].long()] == counts.max()


@pytest.mark.parametrize("need_x,need_v", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("kind,shape", [("empty_rows", (33, 65)), ("empty", (16, 24)), ("random", (1, 7))])
def test_triton_autograd_matches_torch(kind, shape, need_x, need_v):
    _, csr, v, x, _ = setup(kind, shape, torch.float32, lead=(2, 5))
    outs = {}
    gy = torch.randn(2, 5, shape[0])
    for impl in ("triton", "torch"):
        xi = x.clone().requires_grad_(need_x)
        vi = v.clone().requires_grad_(need_v)
        y = sparse_linear(xi, vi, csr, impl)
        y.backward(gy)
        outs[impl] = (y, xi.grad, vi.grad)
    for a, b in zip(outs["triton"], outs["torch"]):
        if b is None:
            assert a is None
        else:
            assert a.dtype == b.dtype and a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_triton_autograd_fp16():
    mask, csr, v, x, _ = setup("random", (33, 65), torch.float16)
    x.requires_grad_(True)
    v.requires_grad_(True)
    y = sparse_linear(x, v, csr, "triton")
    gy = torch.randn_like(y)
    y.backward(gy)
    assert x.grad.dtype == v.grad.dtype == torch.float16
    xr = x.detach().double().requires_grad_(True)
    vr = v.detach().double().requires_grad_(True)
    (xr @ csr.to_dense(vr).T).backward(gy.double())
    close(x.grad, xr.grad, TOL[torch.float16])
    close(v.grad, vr.grad, TOL[torch.float16])


def test_dense_plus_sparse_with_triton_sddmm():
    _, csr, v, x, _ = setup("empty_rows", (33, 65), torch.float32)
    w = torch.randn(33, 65)
    grads = {}
    for impl in ("triton", "torch"):
        vi = v.clone().requires_grad_(True)
        dense_plus_sparse_linear(x, w, vi, csr, impl=impl).square().sum().backward()
        grads[impl] = vi.grad
    torch.testing.assert_close(grads["triton"], grads["torch"], rtol=1e-5, atol=1e-5)
