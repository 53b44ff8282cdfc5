"""Batched generation: same output as one prompt at a time, stop strings, decoding per dataset."""

from __future__ import annotations

import pytest
import torch

from rosa.config import compose, validate
from rosa.data import eval_examples, get_spec, load_examples
from rosa.evaluation.generate import cut_at_stop, decoding_for, generate, left_pad
from rosa.models.tiny import tiny_model, tiny_tokenizer

PROMPTS = [
    "Input: name[The Mill], food[Thai] Output:",
    "Hi",
    "Input: name[Blue Spice], eatType[pub], area[city centre], near[The Vaults] Output:",
    "Why is the sky blue?",
    "Input: name[Zizzi] Output:",
]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is fastest and spares a busy machine
    tokenizer = tiny_tokenizer()
    yield tiny_model(tokenizer).eval(), tokenizer
    torch.set_num_threads(threads)


def test_left_padding_puts_every_prompt_at_the_right_edge(tiny_tokenizer):
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("beams", [1, 5])
def test_batched_kv_cached_output_equals_one_at_a_time(model_and_tokenizer, beams):
    model, tokenizer = model_and_tokenizer
    settings = dict(max_new_tokens=12, num_beams=beams, no_repeat_ngram_size=4 if beams > 1 else 0)
    batched = generate(model, tokenizer, PROMPTS, batch_size=len(PROMPTS), **settings)
    single = generate(model, tokenizer, PROMPTS, batch_size=1, **settings)
    assert batched.texts == single.texts
    assert batched.new_tokens == single.new_tokens > 0


def test_generation_stops_at_a_stop_string_and_cuts_it(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    outputs = generate(model, tokenizer, PROMPTS, max_new_tokens=24).texts
    # a prompt whose (untrained, greedy) continuation changes character: stop at the new one
    found = [(p, t, i) for p, t in zip(PROMPTS, outputs) for i in range(1, len(t)) if t[i] != t[0]]
    if not found:
        pytest.skip(f"not applicable: every continuation repeats one character: {outputs!r}")
    prompt, full, k = found[0]
    stop = full[k]
    cut = generate(model, tokenizer, [prompt], max_new_tokens=24, stop_strings=[stop])
    assert cut.texts[0] == cut_at_stop(full, [stop]) == full[: full.index(stop)]
    assert cut.new_tokens < 24  # stopped early, not merely cut afterwards


def test_stop_criterion_ignores_the_prompt(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    prompts = ["Q:\n", "Q: ab\n"]  # the stop string ends every prompt
    free = generate(model, tiny_tokenizer, prompts, max_new_tokens=6)
    stopped = generate(model, tiny_tokenizer, prompts, max_new_tokens=6, stop_strings=["\n"])
    assert stopped.texts == [cut_at_stop(t, ["\n"]) for t in free.texts]
    # a row whose continuation does not open with the stop string was not stopped by its prompt
    assert all(cut for cut, full in zip(stopped.texts, free.texts) if not full.startswith("\n"))
    assert any(not full.startswith("\n") for full in free.texts)


def test_cut_at_stop():
    assert cut_at_stop("a b\nc Question: d", ["Question:", "\n"]) == "a b"
    assert cut_at_stop("no stop", ["\n"]) == "no stop"
    assert cut_at_stop("x", []) == "x"


def test_decoding_defaults_per_dataset():
    e2e = decoding_for(get_spec("e2e"))
    assert (e2e["num_beams"], e2e["no_repeat_ngram_size"], e2e["max_new_tokens"]) == (5, 4, 128)
    assert e2e["stop_strings"] == ["\n"]
    gsm = decoding_for(get_spec("gsm8k"), num_beams=None, max_new_tokens=7)
    assert (gsm["num_beams"], gsm["no_repeat_ngram_size"], gsm["max_new_tokens"]) == (1, 0, 7)
    with pytest.raises(ValueError, match="temperature"):
        decoding_for(get_spec("e2e"), temperature=0.7)


def test_e2e_evaluates_one_output_per_unique_mr():
    examples, _ = load_examples(validate(compose(["dataset=e2e", "dataset.sample_rows={test: 12}"])).dataset, "test")
    unique = eval_examples(get_spec("e2e"), examples)
    assert len(unique) == len({e.prompt for e in examples}) < len(examples)
    for example in unique:
        assert sorted(example.references) == sorted({e.target for e in examples if e.prompt == example.prompt})


def test_generation_length_comes_from_the_data():
    from types import SimpleNamespace

    from rosa.evaluation.runner import max_new_tokens_from_data
    from rosa.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()  # one token per byte
    rows = [SimpleNamespace(references=["x" * 40, "y" * 10]), SimpleNamespace(references=["z" * 4])]
    assert max_new_tokens_from_data(tokenizer, rows, cap=256) == 40 + 10
    assert max_new_tokens_from_data(tokenizer, [SimpleNamespace(references=["ab"])], cap=256) == 2 + 8
    assert max_new_tokens_from_data(tokenizer, rows, cap=32) == 32
