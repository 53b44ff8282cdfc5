"""LoRA: the layer equals its dense reference, Conv1D works, merging is exact, PEFT loads our export."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rosa.methods.base import adapted_layers, find_target_modules
from rosa.methods.lora import LoRA, LoRALayer


def lora_cfg(**kw):
    return SimpleNamespace(
        **{
            "name": "lora",
            "rank": 4,
            "alpha": 8.0,
            "dropout": 0.0,
            "rslora": False,
            "target_modules": "all-linear",
            **kw,
        }
    )


def randomise(layer: LoRALayer):
    with torch.no_grad():
        layer.lora_B.normal_()


def test_linear_layer_equals_dense_reference():
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    layer = LoRALayer(base, rank=3, alpha=6.0, dropout=0.0, rslora=False, generator=torch.Generator().manual_seed(0))
    randomise(layer)
    x = torch.randn(5, 7, 12)
    dense = base.weight + (6.0 / 3) * layer.lora_B @ layer.lora_A
    torch.testing.assert_close(layer(x), x @ dense.T + base.bias)


def test_rslora_scale():
    layer = LoRALayer(nn.Linear(4, 4), rank=4, alpha=8.0, dropout=0.0, rslora=True, generator=torch.Generator())
    assert layer.scale == pytest.approx(8.0 / 2.0)


def test_init_kaiming_a_and_zero_b_and_seeded():
    a = LoRALayer(nn.Linear(64, 32), 8, 16.0, 0.0, False, torch.Generator().manual_seed(3))
    b = LoRALayer(nn.Linear(64, 32), 8, 16.0, 0.0, False, torch.Generator().manual_seed(3))
    assert torch.equal(a.lora_A, b.lora_A) and torch.count_nonzero(a.lora_B) == 0
    bound = 1 / 64**0.5  # kaiming_uniform(a=sqrt 5) on fan_in 64
    assert a.lora_A.abs().max() <= bound and a.lora_A.abs().max() > 0.8 * bound


def test_conv1d_variant_matches_dense_reference():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    base = Conv1D(10, 12)  # nf=10 outputs, nx=12 inputs; weight [12, 10]
    layer = LoRALayer(base, rank=2, alpha=2.0, dropout=0.0, rslora=False, generator=torch.Generator().manual_seed(0))
    randomise(layer)
    assert (layer.out_features, layer.in_features) == (10, 12)
    x = torch.randn(3, 12)
    dense = base.weight.T + layer.lora_B @ layer.lora_A
    torch.testing.assert_close(layer(x), x @ dense.T + base.bias)
    merged = layer.merged_base()
    torch.testing.assert_close(merged(x), x @ dense.T + base.bias)


def test_target_modules_rules(tiny_tokenizer):
    from rosa.models.tiny import tiny_model

    model = tiny_model(tiny_tokenizer)
    all_linear = find_target_modules(model, "all-linear")
    assert "lm_head" not in all_linear and len(all_linear) == 4 * 7
    assert find_target_modules(model, ["q_proj", "v_proj"]) == [
        n for n in all_linear if n.endswith(("q_proj", "v_proj"))
    ]
    assert find_target_modules(model, r"model\.layers\.0\.mlp\..*") == [
        n for n in all_linear if n.startswith("model.layers.0.mlp.")
    ]
    with pytest.raises(ValueError, match="matches no linear layer"):
        find_target_modules(model, ["nothing"])


def test_merged_model_equals_unmerged(tiny_tokenizer):
    from rosa.models.tiny import tiny_model

    model = tiny_model(tiny_tokenizer).eval()
    method = LoRA(lora_cfg(), seed=0)
    model = method.prepare(model)
    for layer in adapted_layers(model).values():
        randomise(layer)
    ids = torch.randint(3, 259, (2, 17))
    unmerged = model(input_ids=ids).logits
    merged = method.merge(model)
    assert not adapted_layers(merged)
    torch.testing.assert_close(merged(input_ids=ids).logits, unmerged, atol=1e-4, rtol=1e-4)


def test_only_adapters_train_and_count(tiny_tokenizer):
    from rosa.models.tiny import tiny_model

    model = LoRA(lora_cfg(rank=2), seed=0).prepare(tiny_model(tiny_tokenizer))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    expected = sum(2 * (m.in_features + m.out_features) for m in adapted_layers(model).values())
    assert LoRA(lora_cfg(rank=2)).trainable_parameters(model) == expected


def test_peft_export_loads_with_equal_logits(tmp_path, tiny_tokenizer):
    peft = pytest.importorskip("peft")
    from rosa.models.tiny import tiny_model

    model = tiny_model(tiny_tokenizer).eval()
    method = LoRA(lora_cfg(target_modules=["q_proj", "v_proj", "down_proj"]), seed=0)
    model = method.prepare(model)
    for layer in adapted_layers(model).values():
        randomise(layer)
    method.save_adapter(model, tmp_path, {"base_model": "tiny"})
    ids = torch.randint(3, 259, (2, 11))
    ours = model(input_ids=ids).logits
    peft_model = peft.PeftModel.from_pretrained(tiny_model(tiny_tokenizer).eval(), str(tmp_path))
    torch.testing.assert_close(peft_model(input_ids=ids).logits, ours, atol=1e-5, rtol=1e-5)


def test_peft_export_gpt2_conv1d(tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=64)
    torch.manual_seed(0)
    base_state = GPT2LMHeadModel(config).state_dict()

    def fresh():
        model = GPT2LMHeadModel(config).eval()
        model.load_state_dict(base_state)
        return model

    method = LoRA(lora_cfg(target_modules=["c_attn", "c_proj", "c_fc"]), seed=0)
    model = method.prepare(fresh())
    for layer in adapted_layers(model).values():
        randomise(layer)
    method.save_adapter(model, tmp_path, {"base_model": "gpt2-test"})
    ids = torch.randint(0, 50, (2, 9))
    peft_model = peft.PeftModel.from_pretrained(fresh(), str(tmp_path))
    torch.testing.assert_close(peft_model(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_dropout_branch_matches_the_plain_composition(dtype):
    """The fused dropout + low-rank function gives the output and gradients of dropout -> A -> s -> B
    with the same mask, keeps each element with probability 1 - p, and draws from torch's generator
    (a seed repeats it)."""
    from rosa.methods.lora import _DropoutLowRank, keep_mask

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50, 24, generator=g).to(dtype).requires_grad_(True)
    a = torch.randn(4, 24, generator=g).requires_grad_(True)
    b = torch.randn(16, 4, generator=g).requires_grad_(True)
    p, scale = 0.3, 2.0
    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        y = _DropoutLowRank.apply(x, a, b, p, scale)
    grad = torch.randn(y.shape, generator=g).to(y.dtype)
    y.backward(grad)
    torch.manual_seed(7)
    keep = keep_mask(x.shape, p, x.device)
    x_ref = x.detach().float().requires_grad_(True)
    a_ref, b_ref = a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    y_ref = F.linear(F.linear(x_ref * keep / (1 - p), a_ref) * scale, b_ref)
    y_ref.backward(grad.float())
    for ours, ref in ((y, y_ref), (x.grad, x_ref.grad), (a.grad, a_ref.grad), (b.grad, b_ref.grad)):
        scale_of = float(ref.detach().abs().max())  # bf16: 8 mantissa bits, so compare against the largest entry
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(ours.float(), ref.detach(), atol=tol * scale_of, rtol=0)
    assert x.grad.dtype == dtype and a.grad.dtype == torch.float32
    assert abs(keep.float().mean().item() - (1 - p)) < 0.02
    layer = LoRALayer(nn.Linear(24, 16), rank=4, alpha=8.0, dropout=p, rslora=False, generator=torch.Generator())
    layer.eval()
    assert torch.equal(layer(x.detach().float()), layer(x.detach().float()))  # no dropout in eval mode


def test_fused_plain_path_matches_the_composition():
    """Without dropout an nn.Linear base runs as one function (_LowRankLinear): the output and the
    gradients of x, A and B equal base(x) + s B A x under autograd (with and without a bias)."""
    g = torch.Generator().manual_seed(0)
    for bias in (True, False):
        layer = LoRALayer(nn.Linear(24, 16, bias=bias), rank=4, alpha=8.0, dropout=0.1, rslora=False, generator=g)
        layer.eval()  # no dropout: the fused path
        layer.base.requires_grad_(False)
        with torch.no_grad():
            layer.lora_B.normal_(generator=g)
        x = torch.randn(3, 5, 24, generator=g, requires_grad=True)
        assert layer.fused_path(x)
        y = layer(x)
        grad = torch.randn(y.shape, generator=g)
        y.backward(grad)
        ours = (y, x.grad, layer.lora_A.grad, layer.lora_B.grad)
        x_ref = x.detach().clone().requires_grad_(True)
        a_ref, b_ref = (
            layer.lora_A.detach().clone().requires_grad_(True),
            layer.lora_B.detach().clone().requires_grad_(True),
        )
        y_ref = layer.base(x_ref) + F.linear(F.linear(x_ref, a_ref) * layer.scale, b_ref)
        y_ref.backward(grad)
        for a, b in zip(ours, (y_ref, x_ref.grad, a_ref.grad, b_ref.grad)):
            torch.testing.assert_close(a, b.detach())


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_fused_dropout_path_matches_the_old_composition(bias):
    """With dropout an nn.Linear base also runs as _LowRankLinear: it draws the same masks as the
    old composition base(x) + _DropoutLowRank (the same keep_mask draw, leaving torch's generator in
    the same state), and its output and gradients of x, A and B equal the old path's and the plain
    autograd reference's with that mask."""
    from rosa.methods.lora import keep_mask

    g = torch.Generator().manual_seed(0)
    p = 0.3
    layer = LoRALayer(nn.Linear(24, 16, bias=bias), rank=4, alpha=8.0, dropout=p, rslora=False, generator=g)
    layer.base.requires_grad_(False)
    with torch.no_grad():
        layer.lora_B.normal_(generator=g)
    x = torch.randn(3, 50, 24, generator=g)
    grad = torch.randn(3, 50, 16, generator=g)
    assert layer.fused_path(x)

    def run(forward):
        layer.zero_grad()
        x_in = x.clone().requires_grad_(True)
        torch.manual_seed(7)
        y = forward(x_in)
        state = torch.get_rng_state()
        y.backward(grad)
        return (y.detach(), x_in.grad, layer.lora_A.grad.clone(), layer.lora_B.grad.clone()), state

    new, state_new = run(layer)
    old, state_old = run(lambda h: layer.base(h) + layer.lora_forward(h))
    torch.manual_seed(7)
    keep = keep_mask(x.shape, p, x.device)
    ref, _ = run(
        lambda h: layer.base(h) + F.linear(F.linear(h * keep / (1 - p), layer.lora_A) * layer.scale, layer.lora_B)
    )
    assert torch.equal(state_new, state_old)  # the same number of draws
    for ours, theirs, plain in zip(new, old, ref):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))
        torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5 * float(plain.abs().max()))
    assert not torch.equal(new[0], layer.base(x) + F.linear(F.linear(x, layer.lora_A) * layer.scale, layer.lora_B))
    layer.eval()
    assert torch.equal(layer(x), layer(x))  # no dropout in eval mode


def test_low_rank_linear_bias_gradient():
    """_LowRankLinear returns the bias gradient when the bias requires one (rosa-orthogonal's train_bias)."""
    from rosa.methods.lora import _LowRankLinear

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 12, generator=g, requires_grad=True)
    w, bias = torch.randn(10, 12, generator=g), torch.randn(10, generator=g, requires_grad=True)
    a, b = torch.randn(3, 12, generator=g, requires_grad=True), torch.randn(10, 3, generator=g, requires_grad=True)
    y = _LowRankLinear.apply(x, w, bias, a, b, 1.5)
    grad = torch.randn(y.shape, generator=g)
    y.backward(grad)
    ours = (y, x.grad, bias.grad, a.grad, b.grad)
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, bias, a, b)]
    y_ref = F.linear(leaves[0], w, leaves[1]) + F.linear(F.linear(leaves[0], leaves[2]) * 1.5, leaves[3])
    y_ref.backward(grad)
    for o, r in zip(ours, (y_ref, *(t.grad for t in leaves))):
        torch.testing.assert_close(o, r.detach())
