"""DoRA: starts at the pretrained function, equals its dense reference (norm detached), merges exactly,
matches PEFT's DoRA (export loaded by PEFT, and the forward with dropout), trains through train.py."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rosa.methods.base import adapted_layers
from rosa.methods.dora import DoRA, DoRALayer
from tests.conftest import run_train
from tests.evaluation.tiny_run import only_run
from tests.test_config import rejected

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


def dora_cfg(**kw):
    return SimpleNamespace(
        **{
            "name": "dora",
            "rank": 4,
            "alpha": 8.0,
            "dropout": 0.0,
            "rslora": False,
            "target_modules": "all-linear",
            **kw,
        }
    )


def randomise(model_or_layer, seed=0):
    """A trained-looking adapter: B != 0 and m moved away from ||W0||_c."""
    g = torch.Generator().manual_seed(seed)
    layers = [model_or_layer] if isinstance(model_or_layer, DoRALayer) else adapted_layers(model_or_layer).values()
    with torch.no_grad():
        for layer in layers:
            layer.lora_A.add_(0.1 * torch.randn(layer.lora_A.shape, generator=g))
            layer.lora_B.copy_(0.1 * torch.randn(layer.lora_B.shape, generator=g))
            layer.magnitude.mul_(1 + 0.3 * torch.rand(layer.magnitude.shape, generator=g))


def reference(layer: DoRALayer, x: torch.Tensor) -> torch.Tensor:
    """y = m * V x / ||V||_c + bias, V = W0 + s B A, with the norm a constant (detached)."""
    w0 = layer.base.weight.T if type(layer.base).__name__ == "Conv1D" else layer.base.weight
    v = w0.detach() + layer.scale * layer.lora_B @ layer.lora_A
    w = layer.magnitude[:, None] * v / torch.linalg.vector_norm(v, dim=1, keepdim=True).detach()
    return x @ w.T + (0 if layer.base.bias is None else layer.base.bias)


def tiny_llama(tiny_tokenizer):
    from rosa.models.tiny import tiny_model

    return tiny_model(tiny_tokenizer).eval()


def gpt2_factory():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=64)
    torch.manual_seed(0)
    state = GPT2LMHeadModel(config).state_dict()

    def fresh():
        model = GPT2LMHeadModel(config).eval()
        model.load_state_dict(state)
        return model

    return fresh


def test_starts_at_the_pretrained_function(tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer)
    ids = torch.randint(3, 259, (2, 13))
    before = model(input_ids=ids).logits
    model = DoRA(dora_cfg(), seed=0).prepare(model)
    for layer in adapted_layers(model).values():
        torch.testing.assert_close(layer.magnitude, layer.base.weight.norm(dim=1))
        assert torch.count_nonzero(layer.lora_B) == 0
    torch.testing.assert_close(model(input_ids=ids).logits, before, atol=1e-5, rtol=1e-5)
    trainable = {n.rpartition(".")[2] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A", "lora_B", "magnitude"}


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_layer_equals_dense_reference_with_detached_norm(kind):
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    base = nn.Linear(12, 10) if kind == "linear" else Conv1D(10, 12)
    layer = DoRALayer(base, rank=3, alpha=6.0, dropout=0.0, rslora=False, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 7, 12)
    # at initialisation (B = 0) B and m get gradients, A none (as in LoRA); once B != 0, all three
    layer(x).square().sum().backward()
    assert layer.lora_B.grad.abs().sum() > 0 and layer.magnitude.grad.abs().sum() > 0
    assert layer.lora_A.grad.abs().sum() == 0
    randomise(layer)
    ours = layer(x)
    grad_out = torch.randn(ours.shape)
    grads = torch.autograd.grad(ours, (layer.lora_A, layer.lora_B, layer.magnitude), grad_out)
    ref = reference(layer, x)
    ref_grads = torch.autograd.grad(ref, (layer.lora_A, layer.lora_B, layer.magnitude), grad_out)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        merged = layer.merged_base()
        torch.testing.assert_close(merged(x), ref, atol=1e-5, rtol=1e-5)


def test_dropout_forward_is_peft_s(monkeypatch):
    """Training with dropout d: y = W0 x + b + (g - 1) W0 d(x) + g s B A d(x) (PEFT, the paper's code);
    in eval mode the dropout is off."""
    import rosa.methods.dora as dora

    torch.manual_seed(0)
    p = 0.25
    layer = DoRALayer(
        nn.Linear(12, 10), rank=3, alpha=6.0, dropout=p, rslora=False, generator=torch.Generator().manual_seed(0)
    )
    randomise(layer)
    x = torch.randn(4, 12)
    keep = torch.rand(x.shape) >= p
    monkeypatch.setattr(dora, "keep_mask", lambda shape, p_, device: keep)
    layer.train()
    xd = x * keep / (1 - p)
    w0, b = layer.base.weight, layer.base.bias
    v = w0 + layer.scale * layer.lora_B @ layer.lora_A
    g = layer.magnitude / v.norm(dim=1)
    expected = x @ w0.T + b + (g - 1) * (xd @ w0.T) + g * layer.scale * (xd @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    layer.eval()
    torch.testing.assert_close(layer(x), reference(layer, x), atol=1e-5, rtol=1e-5)


def test_bf16_layer_stays_bf16():
    layer = DoRALayer(nn.Linear(16, 8).bfloat16(), 4, 8.0, 0.1, False, torch.Generator()).train()
    for p in layer.parameters():
        p.data = p.data.bfloat16()
    y = layer(torch.randn(3, 16).bfloat16())
    y.sum().backward()
    assert y.dtype == layer.magnitude.grad.dtype == torch.bfloat16


def test_merged_model_equals_unmerged(tiny_tokenizer):
    method = DoRA(dora_cfg(rslora=True), seed=0)
    model = method.prepare(tiny_llama(tiny_tokenizer))
    randomise(model)
    ids = torch.randint(3, 259, (2, 17))
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        merged = method.merge(model)
        assert not adapted_layers(merged)
        torch.testing.assert_close(merged(input_ids=ids).logits, unmerged, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("trained", [False, True], ids=["untrained", "trained"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_peft_loads_our_export_with_equal_logits(tmp_path, tiny_tokenizer, arch, trained):
    peft = pytest.importorskip("peft")
    if arch == "llama":
        fresh, targets, vocab = (lambda: tiny_llama(tiny_tokenizer)), ["q_proj", "v_proj", "down_proj"], 259
    else:
        fresh, targets, vocab = gpt2_factory(), ["c_attn", "c_proj", "c_fc"], 50
    method = DoRA(dora_cfg(target_modules=targets), seed=0)
    model = method.prepare(fresh())
    if trained:
        randomise(model)
    method.save_adapter(model, tmp_path, {"base_model": arch})
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["fan_in_fan_out"] == (arch == "gpt2")
    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert {f"base_model.model.{n}.lora_magnitude_vector" for n in adapted_layers(model)} <= keys
    ids = torch.randint(3, vocab, (2, 11))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        peft_model = peft.PeftModel.from_pretrained(fresh(), str(tmp_path)).eval()
        torch.testing.assert_close(peft_model(input_ids=ids).logits, ours, atol=1e-5, rtol=1e-5)


def test_training_forward_with_dropout_matches_peft(tmp_path, tiny_tokenizer, monkeypatch):
    """Same dropout masks in both (a fixed mask per input shape): PEFT's training-mode logits."""
    peft = pytest.importorskip("peft")
    import rosa.methods.dora as dora

    p = 0.3

    def mask(shape):
        return torch.rand(shape, generator=torch.Generator().manual_seed(shape[-1])) >= p

    class FixedDropout(nn.Module):
        def forward(self, x):
            return x * mask(x.shape) / (1 - p)

    monkeypatch.setattr(dora, "keep_mask", lambda shape, p_, device: mask(shape))
    method = DoRA(dora_cfg(dropout=p, target_modules=["q_proj", "down_proj"]), seed=0)
    model = method.prepare(tiny_llama(tiny_tokenizer))
    randomise(model)
    method.save_adapter(model, tmp_path, {"base_model": "tiny"})
    peft_model = peft.PeftModel.from_pretrained(tiny_llama(tiny_tokenizer), str(tmp_path))
    for module in peft_model.modules():
        if hasattr(module, "lora_dropout"):
            module.lora_dropout["default"] = FixedDropout()
    ids = torch.randint(3, 259, (2, 11))
    with torch.no_grad():
        ours = model.train()(input_ids=ids).logits
        theirs = peft_model.train()(input_ids=ids).logits
        assert (ours - model.eval()(input_ids=ids).logits).abs().max() > 1e-3  # the dropout acted
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_train_py_trains_and_evaluates_merged(tmp_path):
    result = run_train(
        "fnmodel=dora",
        "train.max_steps=3",
        "eval.limit=2",
        "threads=1",
        "train.sample_at_eval=false",
        f"output.path={tmp_path}/runs",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = only_run(tmp_path / "runs")
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["steps"] == 3
    metrics = json.loads((run / "metrics-test.json").read_text())
    assert metrics["method"] == "dora" and metrics["merged"] is True, metrics.get("merge_note")
    assert ", merged, " in result.stdout + result.stderr
    assert "use_dora" in (run / "adapter" / "adapter_config.json").read_text()


def test_rank_zero_is_a_one_line_error(capsys):
    assert "fnmodel.rank=0 is out of range; allowed: an integer >= 1" in rejected(
        capsys, "fnmodel=dora", "fnmodel.rank=0"
    )
