"""precision=nf4: the 4-bit format's error bound, shapes, memory, training every adapter method on a
4-bit base, merged == unmerged within the quantization tolerance, and fft+nf4 refused."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import nn

from rosa.models import quantize as q

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao (NF4) is not installed")

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


# --------------------------------------------------------------------------- format
# The 16 NF4 code values (QLoRA, Appendix E; torchao and bitsandbytes use the same table).
NF4_CODES = (
    -1.0,
    -0.6962,
    -0.5251,
    -0.3949,
    -0.2844,
    -0.1848,
    -0.0911,
    0.0,
    0.0796,
    0.1609,
    0.2461,
    0.3379,
    0.4407,
    0.5626,
    0.7230,
    1.0,
)


def test_round_trip_error_within_nf4_bound():
    torch.manual_seed(0)
    w = torch.randn(128, 512) * torch.rand(128, 1) * 0.1  # fp32 so the bound is the format's alone
    t = q.quantize_weight(w)
    assert q.is_nf4(t) and t.scaler_block_size == 256
    err = (q.dequantize(t) - w).abs().reshape(-1, q.BLOCK_SIZE)
    absmax = w.abs().reshape(-1, q.BLOCK_SIZE).amax(1)
    codes = torch.tensor(NF4_CODES)
    half_gap = 0.5 * (codes[1:] - codes[:-1]).max()
    # the block scale is stored as int8 around the mean: half a step, step = 2 * group absmax / 256
    centred = (absmax - absmax.mean()).reshape(-1, t.scaler_block_size)
    scale_err = (centred.abs().amax(1, keepdim=True) / 256).expand_as(centred).reshape(-1)
    bound = half_gap * (absmax + scale_err) + scale_err + 1e-6
    assert (err.amax(1) <= bound).all(), float((err.amax(1) - bound).max())
    assert err.mean() < 0.1 * absmax.mean()  # and typical errors are far below it


def test_scaler_block_sizes_for_tiny_and_llama_shapes():
    assert q.scaler_block_size_for(192 * 192) == 192  # 576 blocks: 256 does not divide it
    assert q.scaler_block_size_for(192 * 512) == 256
    assert q.scaler_block_size_for(4096 * 4096) == 256
    assert q.scaler_block_size_for(11008 * 4096) == 256
    assert q.scaler_block_size_for(7 * 9) is None  # not a multiple of 64: stays dense
    w = torch.randn(192, 192, dtype=torch.bfloat16)
    assert q.quantize_weight(w).scaler_block_size == 192


def test_analytic_bytes_match_real_bytes():
    for shape in [(192, 192), (512, 192), (256, 1024)]:
        t = q.quantize_weight(torch.randn(*shape, dtype=torch.bfloat16))
        assert q.tensor_bytes(t) == q.nf4_bytes(shape)
        assert q.tensor_bytes(t) < 0.3 * math.prod(shape) * 2


# --------------------------------------------------------------------------- the tiny model
def tiny(nf4=True):
    from rosa.models.tiny import tiny_model, tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).to(torch.bfloat16)
    for p in model.parameters():
        p.requires_grad_(False)
    report = q.quantize_model(model) if nf4 else None
    return model, report


def test_quantize_model_decoder_linears_only_and_dense_weight():
    from rosa.methods.base import dense_weight

    dense, _ = tiny(nf4=False)
    model, report = tiny()
    assert len(report.quantized) == 28 and not report.kept  # 4 layers x 7 projections
    assert not q.is_nf4(model.lm_head.weight) and not q.is_nf4(model.model.embed_tokens.weight)
    layer = model.model.layers[0].self_attn.q_proj
    assert q.is_nf4(layer.weight)
    ref = dense.model.layers[0].self_attn.q_proj.weight
    w = dense_weight(layer)
    assert w.shape == ref.shape and w.dtype == torch.bfloat16
    assert (w.float() - ref.float()).abs().max() < 0.2 * ref.float().abs().max()
    assert q.weight_bytes(model) < 0.75 * q.weight_bytes(dense)  # embeddings + head stay bf16
    x = torch.randint(3, 200, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=x).logits
    assert torch.isfinite(out).all()


def method_cfg(name: str, **kw):
    from rosa.config import compose, validate

    extra = {
        "lora": [],
        "spa": ["fnmodel.density=0.05", "fnmodel.mask_criterion=grad-fisher"],
        "rosa-robust": [
            "fnmodel.rank=4",
            "fnmodel.density=0.02",
            "fnmodel.warmup_steps=2",
            "fnmodel.mask_criterion=grad-fisher",
        ],
        "rosa-orthogonal": ["fnmodel.rank=4", "fnmodel.resample_every=3"],
    }[name]
    run = validate(compose([f"fnmodel={name}", "precision=bf16", *extra]))  # nf4 is applied below
    return run.fnmodel


def train_steps(method, model, steps, batch, lr=5e-3, param_dtype=torch.bfloat16):
    """A minimal loop honouring the hook contract, under bf16 autocast as the real loop on nf4."""
    from types import SimpleNamespace

    from rosa.methods.base import StepContext
    from rosa.training.optim import build_optimizer

    train_cfg = SimpleNamespace(lr=lr, optimizer=SimpleNamespace(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0))

    def cast():
        for p in model.parameters():
            if p.requires_grad and p.dtype != param_dtype:
                p.data = p.data.to(param_dtype)

    cast()
    opt = build_optimizer(method.param_groups(model, train_cfg), train_cfg)
    losses, step, phase = [], 0, 0
    while phase < steps:
        ctx = StepContext(
            model=model,
            step=step,
            phase_step=phase,
            epoch=0,
            steps_per_epoch=steps,
            total_steps=steps,
            micro_batches_per_step=1,
        )
        for req in (method.before_step(ctx),):
            if req is not None:
                cast()
                opt = build_optimizer(method.param_groups(model, train_cfg), train_cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=batch).logits
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        step += 1
        phase += 1
        req = method.after_step(
            StepContext(
                model=model,
                step=step,
                phase_step=phase,
                epoch=0,
                steps_per_epoch=steps,
                total_steps=steps,
                micro_batches_per_step=1,
            )
        )
        if req is not None:
            cast()
            opt = build_optimizer(method.param_groups(model, train_cfg), train_cfg)
            if req.restart:
                phase = 0
    return losses


def eval_loss(model, batch):
    model.eval()  # LoRA dropout off
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=batch).logits
    return float(
        nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())
    ), logits.float()


METHODS = {
    "lora": "rosa.methods.lora",
    "spa": "rosa.methods.rosa_robust",
    "rosa-robust": "rosa.methods.rosa_robust",
    "rosa-orthogonal": "rosa.methods.rosa_orthogonal",
}


@pytest.mark.parametrize("name", list(METHODS))
def test_method_trains_on_4bit_base_and_merges(name):
    if importlib.util.find_spec(METHODS[name]) is None:
        pytest.skip(f"{METHODS[name]} does not exist yet")
    from rosa.methods import METHODS as registry
    from rosa.methods import get_method

    if name not in registry:
        pytest.skip(f"{name} is not registered")
    from rosa.methods.base import adapted_layers

    model, _ = tiny()
    method = get_method(method_cfg(name), seed=0)
    model = method.prepare(model)
    batch = torch.randint(3, 200, (4, 24), generator=torch.Generator().manual_seed(1))
    before, _ = eval_loss(model, batch)
    train_steps(method, model, 6, batch)
    after, unmerged = eval_loss(model, batch)
    assert after < before - 0.05, (before, after)
    layers = adapted_layers(model)
    if name in ("spa", "rosa-robust"):  # masks came from input/grad-output hooks on the 4-bit base
        assert all(layer.nnz > 0 for layer in layers.values())
    if name == "rosa-orthogonal":  # W_fixed is dense: the 4-bit base is dropped (float32 master,
        # as resampling repeats: bounded bf16 drift, see rosa_orthogonal's docstring)
        assert all(layer.base.weight is None and layer.w_fixed.dtype == torch.float32 for layer in layers.values())
    else:  # the base stays 4-bit under the adapter
        assert all(q.is_nf4(layer.base.weight) for layer in layers.values())
    # merged: dequantise + delta -> a plain bf16 weight; agrees with unmerged up to bf16 rounding
    merged = method.merge(model)
    assert not adapted_layers(merged)
    assert not any(q.is_nf4(m.weight) for m in merged.modules() if isinstance(m, nn.Linear))
    merged_loss, merged_logits = eval_loss(merged, batch)
    diff = (merged_logits - unmerged).abs()  # bf16 rounding of W + delta, through 4 bf16 layers
    assert diff.mean() < 0.02 * unmerged.abs().mean() and diff.max() < 0.1 * unmerged.abs().max()
    assert abs(merged_loss - after) < 0.02 * after


def test_save_merged_loads_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    from rosa.evaluation.load import save_merged
    from rosa.methods import get_method

    model, _ = tiny()
    method = get_method(method_cfg("lora"), seed=0)
    model = method.merge(method.prepare(model))
    x = torch.randint(3, 200, (1, 8))
    with torch.no_grad():
        ref = model(input_ids=x).logits
    save_merged(model, None, tmp_path / "merged")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, ref, atol=2e-2, rtol=2e-2)


def test_fft_with_nf4_is_a_one_line_error(capsys):
    from rosa.command_line import check_command_line

    with pytest.raises(SystemExit) as exit_info:
        check_command_line(["train.py", "fnmodel=fft", "precision=nf4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nf4" in err and "fft" in err
