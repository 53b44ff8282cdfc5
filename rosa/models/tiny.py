"""The built-in tiny model: a ~1.9M-parameter Llama built from a config in code, with a byte-level
tokenizer (ByT5's: 256 byte ids + pad/eos/unk, nothing to download). Initialisation is seeded, so
the "pretrained" weights are the same on every machine and eval.py can rebuild them exactly."""

from __future__ import annotations

import torch
from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

TINY_ARCH = dict(
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)
TINY_INIT_SEED = 1234


def tiny_tokenizer() -> ByT5Tokenizer:
    tokenizer = ByT5Tokenizer(extra_ids=0)
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_model(tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **TINY_ARCH,
    )
    devices_rng = torch.random.fork_rng(devices=[])
    with devices_rng:
        torch.manual_seed(TINY_INIT_SEED)
        model = LlamaForCausalLM(config)
    return model
