"""Tokenisation into training features, target truncation, ELI5 blocks and batch collation."""

from __future__ import annotations

import copy

import pytest
import torch

from rosa.data import DataError, Example, build_train_features, collate_batch, get_spec, load_examples
from rosa.data.features import MIN_MAX_LENGTH, prompt_ids
from tests.data.conftest import dataset_cfg

EOS, PAD = 1, 0


def example(prompt: str, target: str) -> Example:
    return Example("x:train:1", prompt, target, [target], {})


def text_of(tokenizer, ids) -> str:
    return tokenizer.decode([i for i in ids if i != EOS])


@pytest.mark.parametrize("name", ["e2e", "gsm8k", "viggo", "sql"])
def test_target_only_labels_and_eos(name, tokenizer):
    spec = get_spec(name)
    examples, _ = load_examples(dataset_cfg(name, sample_rows={"train": 8}), "train")
    features, stats = build_train_features(examples, tokenizer, spec, max_length=4096)
    assert stats.features == len(features) == 8 and stats.truncated == stats.skipped_long_prompt == 0
    for feature, ex in zip(features, examples, strict=True):
        ids, labels = feature["input_ids"], feature["labels"]
        prompt_length = len(tokenizer(ex.prompt, add_special_tokens=False)["input_ids"])
        assert ids[-1] == EOS and EOS not in ids[:-1]
        assert labels[:prompt_length] == [-100] * prompt_length and -100 not in labels[prompt_length:]
        assert labels[prompt_length:] == ids[prompt_length:]
        assert text_of(tokenizer, ids) == ex.prompt + spec.separator + ex.target
        assert text_of(tokenizer, ids[prompt_length:]) == spec.separator + ex.target
    assert stats.label_tokens == sum(sum(label != -100 for label in f["labels"]) for f in features)


def test_loss_on_all_and_bad_value(tokenizer):
    features, _ = build_train_features([example("Input: a Output:", "b")], tokenizer, get_spec("e2e"), 64, "all")
    assert features[0]["labels"] == features[0]["input_ids"]
    assert text_of(tokenizer, features[0]["input_ids"]) == "Input: a Output: b"
    with pytest.raises(DataError, match="loss_on: 'prompt'; allowed: target, all"):
        build_train_features([example("p", "t")], tokenizer, get_spec("e2e"), 64, "prompt")


def test_truncation_and_long_prompts_are_counted(tokenizer):
    examples = [example("P" * 10, "T" * 30), example("P" * 20, "t"), example("p", "ok")]
    features, stats = build_train_features(examples, tokenizer, get_spec("e2e"), max_length=20)
    assert stats.truncated == 1 and stats.skipped_long_prompt == 1 and stats.features == 2
    cut = features[0]["input_ids"]
    assert len(cut) == 20 and cut[-1] != EOS and text_of(tokenizer, cut) == "P" * 10 + " " + "T" * 9
    assert features[1]["input_ids"][-1] == EOS
    with pytest.raises(DataError, match="max_length"):
        build_train_features([example("P" * 20, "t")], tokenizer, get_spec("e2e"), max_length=20)


def test_max_length_limit_is_the_one_constant(tokenizer):
    assert MIN_MAX_LENGTH == 8  # rosa.config's dataset.max_length check uses the same limit
    build_train_features([example("p", "t")], tokenizer, get_spec("e2e"), max_length=MIN_MAX_LENGTH)
    with pytest.raises(DataError, match=f"dataset.max_length: 7; allowed: an integer >= {MIN_MAX_LENGTH}"):
        build_train_features([example("p", "t")], tokenizer, get_spec("e2e"), max_length=MIN_MAX_LENGTH - 1)


class BosTokenizer:
    """The byte tokenizer with a BOS id, to check that BOS is prepended and masked."""

    bos_token_id, eos_token_id = 2, EOS

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, texts, add_special_tokens):
        assert add_special_tokens is False
        return self.inner(texts, add_special_tokens=False)


def test_bos_prepended_when_tokenizer_has_one(tokenizer):
    bos = BosTokenizer(tokenizer)
    features, _ = build_train_features([example("Input: a Output:", "b")], bos, get_spec("e2e"), 64)
    ids, labels = features[0]["input_ids"], features[0]["labels"]
    assert ids[0] == 2 and ids.count(2) == 1 and labels[0] == -100
    assert prompt_ids(bos, ["Input: a Output:"])[0] == ids[:17]
    assert prompt_ids(tokenizer, ["Input: a Output:"])[0] == ids[1:17]


class MergingTokenizer(BosTokenizer):
    """Merges ": " into one token, so the prompt's tokens are not a prefix of prompt + target."""

    bos_token_id = None

    def __call__(self, texts, add_special_tokens):
        ids = self.inner([text.replace(": ", "\x7f") for text in texts], add_special_tokens=False)["input_ids"]
        return {"input_ids": ids}


def test_boundary_fallback_is_counted(tokenizer):
    features, stats = build_train_features(
        [example("Q:", "x"), example("Q;", "y")], MergingTokenizer(tokenizer), get_spec("e2e"), 64
    )
    assert stats.boundary_fallbacks == 1
    assert tokenizer.decode(features[0]["input_ids"][:-1]) == "Q: x"


def test_eli5_fixed_blocks(tokenizer):
    spec = get_spec("eli5")
    examples, _ = load_examples(dataset_cfg("eli5"), "validation")
    features, stats = build_train_features(examples, tokenizer, spec, max_length=512)
    total = sum(len(e.target.encode("utf-8")) + 1 for e in examples)  # bytes + EOS per text
    assert all(len(f["input_ids"]) == 128 and f["labels"] == f["input_ids"] for f in features)
    assert stats.features == len(features) == total // 128 and stats.dropped_tail_tokens == total % 128
    stream = [i for f in features for i in f["input_ids"]]
    first = tokenizer(examples[0].target, add_special_tokens=False)["input_ids"] + [EOS]
    assert stream[: len(first)] == first
    with pytest.raises(DataError, match="fewer than one 128-token block"):
        build_train_features([example("", "short")], tokenizer, spec, 512)


def test_collate_right_pads(tokenizer):
    examples = [example("Input: a Output:", "bb"), example("Input: abc Output:", "c")]
    features, _ = build_train_features(examples, tokenizer, get_spec("e2e"), 64)
    batch = collate_batch(features, pad_id=PAD)
    lengths = [len(f["input_ids"]) for f in features]
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(t.shape == (2, max(lengths)) and t.dtype == torch.long for t in batch.values())
    short = lengths.index(min(lengths))
    assert batch["attention_mask"][short].tolist() == [1] * min(lengths) + [0] * (max(lengths) - min(lengths))
    assert batch["input_ids"][short, min(lengths) :].eq(PAD).all()
    assert batch["labels"][short, min(lengths) :].eq(-100).all()
    assert batch["input_ids"][short, : min(lengths)].tolist() == features[short]["input_ids"]
    with pytest.raises(DataError):
        collate_batch([], pad_id=PAD)


class NoBosTokenizer(BosTokenizer):
    """Has a BOS id but does not add it itself (SmolLM2's and GPT-2's convention)."""

    add_bos_token = False


def test_no_bos_when_the_tokenizer_does_not_add_one(tokenizer):
    features, _ = build_train_features(
        [example("Input: a Output:", "b")], NoBosTokenizer(tokenizer), get_spec("e2e"), 64
    )
    assert 2 not in features[0]["input_ids"]
    assert prompt_ids(NoBosTokenizer(tokenizer), ["Input: a Output:"])[0] == features[0]["input_ids"][:16]


def test_chat_template_renders_prompts_in_training_and_generation(tokenizer):
    from rosa.data.features import render_prompts

    chat = copy.deepcopy(tokenizer)
    chat.chat_template = (
        "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    )
    chat.use_chat_template = True
    assert render_prompts(tokenizer, ["Input: a"]) == ["Input: a"]  # unmarked: the plain prompt
    assert render_prompts(chat, ["Input: a"]) == ["<u>Input: a</u><a>"]
    features, _ = build_train_features([example("Input: a", "b")], chat, get_spec("e2e"), 64)
    ids, labels = features[0]["input_ids"], features[0]["labels"]
    assert text_of(tokenizer, ids[:-1]) == "<u>Input: a</u><a>b"  # no separator after the template
    assert prompt_ids(chat, ["Input: a"])[0] == ids[:-2]
    assert [l for l in labels if l != -100] == ids[-2:]
