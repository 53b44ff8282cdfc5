"""Models: the tiny built-in model is small, seeded and offline; a local folder loads like a hub
id; precision resolves as documented."""

import torch

from rosa.models import load_model, load_tokenizer, resolve_precision
from rosa.models.tiny import tiny_model, tiny_tokenizer


class Cfg:
    def __init__(self, name, **kw):
        self.name, self.revision, self.cache, self.trust_remote_code, self.gradient_checkpointing = (
            name,
            None,
            None,
            False,
            False,
        )
        self.__dict__.update(kw)


def test_tiny_model_is_small_seeded_and_llama():
    tokenizer = tiny_tokenizer()
    a, b = tiny_model(tokenizer), tiny_model(tokenizer)
    n = sum(p.numel() for p in a.parameters())
    assert 1e6 <= n <= 5e6 and a.config.model_type == "llama"
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None


def test_tiny_init_does_not_disturb_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    tiny_model(tiny_tokenizer())
    assert torch.equal(torch.rand(3), expected)


def test_local_directory_loads_like_a_hub_id(tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cfg = Cfg(str(tmp_path))
    loaded_tokenizer = load_tokenizer(cfg)
    assert loaded_tokenizer.padding_side == "left" and loaded_tokenizer.pad_token is not None
    assert next(load_model(cfg, loaded_tokenizer, torch.bfloat16).parameters()).dtype == torch.bfloat16
    loaded = load_model(cfg, loaded_tokenizer, torch.float32)
    assert not any(p.requires_grad for p in loaded.parameters())
    ids = torch.randint(3, 259, (1, 8))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_resolve_precision():
    cpu = torch.device("cpu")
    auto = resolve_precision(Cfg("auto", base_dtype="auto", param_dtype="fp32", autocast="auto"), cpu)
    assert auto["name"] == "fp32" and auto["autocast"] is None and auto["base_dtype"] == torch.float32
    bf16 = resolve_precision(Cfg("bf16", base_dtype="bf16", param_dtype="fp32", autocast="bf16"), cpu)
    assert (
        bf16["base_dtype"] == torch.bfloat16
        and bf16["param_dtype"] == torch.float32
        and bf16["autocast"] == torch.bfloat16
    )
