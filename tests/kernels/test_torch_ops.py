import pytest
import torch

from rosa.kernels import dense_plus_sparse_linear, resolve_impl, sddmm, sparse_linear, spmm, spmm_t, torch_ops

from ._cases import CASE_IDS, CASES, SDDMM_TOL, TOL, close, refs, setup

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("impl", ["torch", "dense"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind,shape", CASES, ids=CASE_IDS)
def test_ops_vs_dense_reference(kind, shape, dtype, impl):
    mask, csr, v, x, g = setup(kind, shape, dtype)
    y_ref, gx_ref, dv_ref = refs(mask, v, x, g)
    y = spmm(v, csr, x, impl=impl)
    assert y.dtype == dtype and y.shape == y_ref.shape
    close(y, y_ref, TOL[dtype])
    gx = spmm_t(v, csr, g, impl=impl)
    assert gx.dtype == dtype and gx.shape == gx_ref.shape
    close(gx, gx_ref, TOL[dtype])
    dv = sddmm(csr, g, x, impl=impl)
    assert dv.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    close(dv, dv_ref, SDDMM_TOL[dtype])
    assert sddmm(csr, g, x, impl=impl, out_dtype=dtype).dtype == dtype


def test_mixed_dtypes_and_leading_dims():
    mask, csr, v, x, g = setup("random", (33, 65), torch.float32, lead=(2, 3))
    y_ref, gx_ref, dv_ref = refs(mask, v, x, g)
    xb, gb = x.to(torch.bfloat16), g.to(torch.bfloat16)
    y = spmm(v, csr, xb)  # fp32 values, bf16 activations -> bf16 output
    assert y.shape == (2, 3, 33) and y.dtype == torch.bfloat16
    y_ref, gx_ref, dv_ref = refs(mask, v, xb, gb)
    close(y, y_ref, TOL[torch.bfloat16])
    close(spmm_t(v.half(), csr, gb), refs(mask, v.half(), xb, gb)[1], TOL[torch.bfloat16])
    close(sddmm(csr, gb, xb), dv_ref, SDDMM_TOL[torch.bfloat16])


@pytest.mark.parametrize("kind,shape", CASES[:5], ids=CASE_IDS[:5])
def test_gather_fallback(kind, shape, monkeypatch):
    """The non-torch.sparse path (used on devices without sparse CSR kernels)."""
    monkeypatch.setattr(torch_ops, "_SPARSE_DEVICES", ())
    monkeypatch.setattr(torch_ops, "_GATHER_CHUNK_ELEMS", 64)  # force several chunks
    mask, csr, v, x, g = setup(kind, shape, torch.float64)
    y_ref, gx_ref, dv_ref = refs(mask, v, x, g)
    close(spmm(v, csr, x, "torch"), y_ref, TOL[torch.float64])
    close(spmm_t(v, csr, g, "torch"), gx_ref, TOL[torch.float64])
    close(sddmm(csr, g, x, "torch"), dv_ref, TOL[torch.float64])


def test_zero_tokens():
    mask, csr, v, x, g = setup("random", (33, 65), torch.float32, T=0)
    assert spmm(v, csr, x).shape == (0, 33)
    assert spmm_t(v, csr, g).shape == (0, 65)
    assert torch.equal(sddmm(csr, g, x), torch.zeros(csr.nnz))


GRADCHECK_CASES = [c for c in CASES if c[1][0] * c[1][1] <= 400] + [
    ("random", (12, 20)),
    ("empty_rows", (10, 14)),
    ("skewed", (16, 16)),
]


@pytest.mark.parametrize("kind,shape", GRADCHECK_CASES, ids=[f"{k}-{s[0]}x{s[1]}" for k, s in GRADCHECK_CASES])
def test_gradcheck_sparse_linear(kind, shape):
    _, csr, v, x, _ = setup(kind, shape, torch.float64, T=4)
    x.requires_grad_(True)
    v.requires_grad_(True)
    fast = x.numel() + v.numel() + x.shape[0] * shape[0] > 150  # fast mode for larger cases
    assert torch.autograd.gradcheck(lambda a, b: sparse_linear(a, b, csr, "torch"), (x, v), fast_mode=fast)


@pytest.mark.parametrize(
    "kind,shape", [("random", (9, 13)), ("empty_rows", (8, 6)), ("empty", (5, 4)), ("full", (4, 5))]
)
def test_gradcheck_dense_plus_sparse(kind, shape):
    _, csr, v, x, _ = setup(kind, shape, torch.float64, T=3)
    w = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x.requires_grad_(True)
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: dense_plus_sparse_linear(a, c, b, csr, impl="torch"), (x, v, w))


@pytest.mark.parametrize("impl", ["torch", "dense"])
@pytest.mark.parametrize("need_x,need_v", [(True, True), (True, False), (False, True)])
def test_sparse_linear_grads_vs_autograd(impl, need_x, need_v):
    mask, csr, v, x, _ = setup("empty_rows", (33, 65), torch.float32, lead=(2, 5))
    x.requires_grad_(need_x)
    v.requires_grad_(need_v)
    y = sparse_linear(x, v, csr, impl)
    gy = torch.randn_like(y)
    y.backward(gy)
    xr = x.detach().double().requires_grad_(need_x)
    vr = v.detach().double().requires_grad_(need_v)
    yr = xr @ csr.to_dense(vr).T
    yr.backward(gy.double())
    close(y, yr, TOL[torch.float32])
    if need_x:
        close(x.grad, xr.grad, TOL[torch.float32])
    else:
        assert x.grad is None
    if need_v:
        close(v.grad, vr.grad, TOL[torch.float32])
    else:
        assert v.grad is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_dense_plus_sparse_frozen_weight(dtype):
    mask, csr, v, x, _ = setup("random", (33, 65), dtype, lead=(2, 5))
    w = torch.randn(33, 65).to(dtype)  # frozen
    v.requires_grad_(True)
    x.requires_grad_(True)
    y = dense_plus_sparse_linear(x, w, v, csr)
    assert y.dtype == dtype and y.shape == (2, 5, 33)
    gy = torch.randn_like(y)
    y.backward(gy)
    assert v.grad.dtype == dtype and x.grad.dtype == dtype and w.grad is None
    xr = x.detach().double().requires_grad_(True)
    vr = v.detach().double().requires_grad_(True)
    yr = xr @ (w.double() + csr.to_dense(vr)).T
    yr.backward(gy.double())
    tol = TOL[dtype]
    close(y, yr, tol)
    close(x.grad, xr.grad, tol)
    close(v.grad, vr.grad, tol)


def test_sparse_linear_bf16_values_grad_dtype():
    _, csr, v, x, _ = setup("random", (33, 65), torch.bfloat16)
    v.requires_grad_(True)
    sparse_linear(x, v, csr).float().sum().backward()
    assert v.grad.dtype == torch.bfloat16 and v.grad.shape == v.shape


def test_resolve_impl(monkeypatch):
    assert resolve_impl("auto", "cpu") == "torch"
    assert resolve_impl("torch", torch.device("cpu")) == "torch"
    assert resolve_impl("dense", "cpu") == "dense"
    with pytest.raises(ValueError, match="auto, triton, torch, dense"):
        resolve_impl("cusparse", "cpu")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="triton"):
        resolve_impl("triton", "cpu")


def test_shape_errors():
    _, csr, v, x, g = setup("random", (33, 65), torch.float32)
    with pytest.raises(ValueError):
        spmm(v[:-1], csr, x)
    with pytest.raises(ValueError):
        spmm(v, csr, g)
    with pytest.raises(ValueError):
        sddmm(csr, x, g)
    with pytest.raises(ValueError):
        dense_plus_sparse_linear(x, torch.zeros(65, 33), v, csr)


def test_dense_plus_sparse_4bit_weight_saves_codes_not_a_dequantised_copy():
    """An NF4 weight goes into the autograd function as it is: same output and gradients as its
    dequantised copy, and what autograd holds until backward is x, values and the 4-bit weight only."""
    from torch import nn

    from rosa.models.quantize import is_nf4, quantize_model

    layer = nn.Linear(128, 64, bias=False).to(torch.bfloat16)
    layer.weight.requires_grad_(False)
    quantize_model(nn.Sequential(layer))
    assert is_nf4(layer.weight)
    dense = layer.weight.get_original_weight()
    mask, csr, v, x, _ = setup("random", (64, 128), torch.bfloat16, lead=(3,))
    results = []
    for weight in (layer.weight, dense):
        xi, vi = x.clone().requires_grad_(True), v.clone().requires_grad_(True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            y = dense_plus_sparse_linear(xi, weight, vi, csr)
        y.float().square().sum().backward()
        results.append((y, xi.grad, vi.grad, saved))
    (y4, gx4, gv4, saved4), (yd, gxd, gvd, _) = results
    assert torch.equal(y4, yd) and torch.equal(gx4, gxd) and torch.equal(gv4, gvd)
    big = [t for t in saved4 if t is not layer.weight and t.numel() >= dense.numel()]
    assert big == [], "a dense copy of the 4-bit weight was kept for backward"
