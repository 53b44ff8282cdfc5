import pytest
import torch

from rosa.kernels import CSRMatrix

from ._cases import CASE_IDS, CASES, make_mask


@pytest.mark.parametrize("kind,shape", CASES, ids=CASE_IDS)
def test_from_mask_round_trip(kind, shape):
    mask = make_mask(kind, shape)
    csr = CSRMatrix.from_mask(mask)
    n, m = shape
    assert csr.shape == (n, m)
    assert csr.nnz == int(mask.sum())
    assert torch.equal(csr.mask(), mask)
    values = torch.randn(csr.nnz)
    dense = torch.zeros(n, m)
    dense[mask] = values  # boolean indexing is row-major: the order of `values`
    assert torch.equal(csr.to_dense(values), dense)
    # row offsets / columns
    assert torch.equal(csr.row_offsets[1:] - csr.row_offsets[:-1], mask.sum(1).int())
    assert torch.equal(csr.col_indices.long(), mask.nonzero()[:, 1])


@pytest.mark.parametrize("kind,shape", CASES, ids=CASE_IDS)
def test_dtypes_and_row_order(kind, shape):
    csr = CSRMatrix.from_mask(make_mask(kind, shape))
    assert csr.row_offsets.dtype == torch.int32
    assert csr.t_row_offsets.dtype == torch.int32
    assert csr.col_indices.dtype == torch.int16
    assert csr.t_col_indices.dtype == torch.int16
    assert csr.row_order.dtype == csr.t_row_order.dtype == csr.t_perm.dtype == torch.int32
    counts = csr.row_counts()
    order = csr.row_order.long()
    assert sorted(order.tolist()) == list(range(shape[0]))
    assert torch.all(counts[order][:-1] >= counts[order][1:])
    t_counts = (csr.t_row_offsets[1:] - csr.t_row_offsets[:-1]).long()
    t_order = csr.t_row_order.long()
    assert sorted(t_order.tolist()) == list(range(shape[1]))
    assert torch.all(t_counts[t_order][:-1] >= t_counts[t_order][1:])


def test_int32_columns_for_wide_and_tall():
    wide = CSRMatrix.from_mask(make_mask("random", (2, 40000), density=0.001))
    assert wide.col_indices.dtype == torch.int32 and wide.t_col_indices.dtype == torch.int16
    tall = CSRMatrix.from_mask(make_mask("random", (40000, 2), density=0.001))
    assert tall.col_indices.dtype == torch.int16 and tall.t_col_indices.dtype == torch.int32
    edge = CSRMatrix.from_mask(make_mask("random", (1, 32767), density=0.01))
    assert edge.col_indices.dtype == torch.int16
    assert torch.equal(wide.mask(), make_mask("random", (2, 40000), density=0.001))


@pytest.mark.parametrize("kind,shape", CASES, ids=CASE_IDS)
def test_transposed_structure(kind, shape):
    mask = make_mask(kind, shape)
    csr = CSRMatrix.from_mask(mask)
    values = torch.randn(csr.nnz)
    t = CSRMatrix.from_mask(mask.T.contiguous())
    assert torch.equal(csr.t_row_offsets, t.row_offsets)
    assert torch.equal(csr.t_col_indices, t.col_indices)
    assert torch.equal(csr.t_row_order, t.row_order)
    # values[t_perm] are S^T's values in its row-major order
    assert torch.equal(t.to_dense(values[csr.t_perm.long()]), csr.to_dense(values).T)


@pytest.mark.parametrize("kind,shape", CASES, ids=CASE_IDS)
def test_buffers_round_trip(kind, shape, tmp_path):
    csr = CSRMatrix.from_mask(make_mask(kind, shape))
    bufs = csr.buffers()
    assert set(bufs) == {
        "row_offsets",
        "col_indices",
        "row_order",
        "t_row_offsets",
        "t_col_indices",
        "t_row_order",
        "t_perm",
    }
    torch.save(bufs, tmp_path / "b.pt")
    back = CSRMatrix.from_buffers(torch.load(tmp_path / "b.pt"), shape)
    for k, v in bufs.items():
        assert torch.equal(getattr(back, k), v) and getattr(back, k).dtype == v.dtype, k
    # transposed fields may be omitted: they are rebuilt
    partial = {k: bufs[k] for k in ("row_offsets", "col_indices")}
    back2 = CSRMatrix.from_buffers(partial, shape)
    for k, v in bufs.items():
        assert torch.equal(getattr(back2, k), v), k


def test_buffers_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    csr = CSRMatrix.from_mask(make_mask("random", (33, 65)))
    st.save_file(csr.buffers(), str(tmp_path / "s.safetensors"))
    back = CSRMatrix.from_buffers(st.load_file(str(tmp_path / "s.safetensors")), (33, 65))
    assert torch.equal(back.mask(), csr.mask())


def test_from_buffers_inconsistent():
    csr = CSRMatrix.from_mask(make_mask("random", (8, 9)))
    with pytest.raises(ValueError):
        CSRMatrix.from_buffers(csr.buffers(), (7, 9))


def test_to_device_and_misc():
    csr = CSRMatrix.from_mask(make_mask("random", (8, 9)))
    assert csr.to("cpu") is csr
    assert csr.device == torch.device("cpu")
    assert 0 < csr.density <= 1
    assert "nnz=" in repr(csr)
    with pytest.raises(ValueError):
        CSRMatrix.from_mask(torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError):
        csr.to_dense(torch.zeros(csr.nnz + 1))


def test_to_dense_differentiable():
    csr = CSRMatrix.from_mask(make_mask("random", (8, 9)))
    v = torch.randn(csr.nnz, requires_grad=True)
    (csr.to_dense(v) * 2).sum().backward()
    assert torch.equal(v.grad, torch.full_like(v, 2.0))
