"""The sample source: split sizes, determinism, and the exact prompt text of every dataset."""

from __future__ import annotations

import pytest

from rosa.data import DATASETS, eval_examples, get_spec, load_examples
from rosa.data.viggo import PROMPT as VIGGO_PROMPT
from tests.data.conftest import dataset_cfg

NAMES = ["e2e", "eli5", "gsm8k", "sql", "viggo"]  # discovered: in module-name order


def test_registry_and_unknown_name():
    assert list(DATASETS) == NAMES
    assert {name: get_spec(name).headline_metric for name in NAMES} == {
        "e2e": "bleu",
        "eli5": "ppl",
        "gsm8k": "exact_match_strict",
        "viggo": "exact_match",
        "sql": "exact_match",
    }
    with pytest.raises(ValueError, match="allowed: e2e, eli5, gsm8k, sql, viggo"):
        get_spec("e2e_nlg2")


@pytest.mark.parametrize("name", NAMES)
def test_split_sizes_and_determinism(name):
    cfg = dataset_cfg(name)
    for split, size in {"train": 500, "validation": 50, "test": 50}.items():
        examples, report = load_examples(cfg, split)
        assert len(examples) == size and report.kept == size and report.malformed == 0
        assert all(example.target for example in examples)
    first, _ = load_examples(cfg, "train")
    again, _ = load_examples(dataset_cfg(name), "train")
    other, _ = load_examples(dataset_cfg(name, sample_seed=1), "train")
    assert [(e.prompt, e.target) for e in first] == [(e.prompt, e.target) for e in again]
    assert [(e.prompt, e.target) for e in first] != [(e.prompt, e.target) for e in other]
    test, _ = load_examples(cfg, "test")
    assert [e.target for e in test] != [e.target for e in first[:50]]


def test_sample_rows_and_limit():
    examples, report = load_examples(dataset_cfg("gsm8k", sample_rows={"train": 20}, limit=7), "train")
    assert len(examples) == 7 and report.over_limit == 13 and "13 over limit" in report.summary()


def test_e2e_prompt_and_references():
    examples, _ = load_examples(dataset_cfg("e2e"), "train")
    example = examples[0]
    assert example.prompt == f"Input: {example.meta['mr']} Output:"
    assert example.target == example.meta["ref"]
    assert get_spec("e2e").separator == " "
    # several references per MR, rows repeat the MR like the real file
    assert len(example.references) >= 2 and example.target in example.references
    unique = eval_examples(get_spec("e2e"), examples)
    assert len(unique) < len(examples) and len({u.prompt for u in unique}) == len(unique)
    assert get_spec("e2e").decoding["num_beams"] == 5 and get_spec("e2e").decoding["no_repeat_ngram_size"] == 4


def test_gsm8k_prompt():
    examples, _ = load_examples(dataset_cfg("gsm8k"), "train")
    example = examples[0]
    assert example.prompt == f"Question: {example.meta['question']}\nAnswer:"
    assert example.target.rsplit("\n", 1)[-1].startswith("#### ")
    assert any("<<" in e.target for e in examples) and any("<<" not in e.target for e in examples)
    spec = get_spec("gsm8k")
    assert spec.stop_strings == ["Question:", "</s>", "<|im_end|>"]  # lm-eval's gsm8k.yaml v3
    assert spec.max_new_tokens == 256 and spec.separator == " "


def test_viggo_prompt_is_rosa_verbatim():
    expected = (
        "Given a target sentence construct the underlying meaning representation of the input sentence as a single "
        "function with attributes and attribute values. This function should describe the target string accurately "
        "and the function must be one of the following ['inform', 'request', 'give_opinion', 'confirm', "
        "'verify_attribute', 'suggest', 'request_explanation', 'recommend', 'request_attribute']. The attributes "
        "must be one of the following: ['name', 'exp_release_date', 'release_year', 'developer', 'esrb', 'rating', "
        "'genres', 'player_perspective', 'has_multiplayer', 'platforms', 'available_on_steam', 'has_linux_release', "
        "'has_mac_release', 'specifier']\n\n### Target sentence:\n{target}\n\n### Meaning representation:\n"
    )
    assert VIGGO_PROMPT == expected
    examples, _ = load_examples(dataset_cfg("viggo"), "train")
    example = examples[0]
    assert example.prompt == expected.replace("{target}", example.meta["ref"])
    assert example.target == example.meta["mr"] and get_spec("viggo").separator == ""


def test_sql_prompt():
    examples, _ = load_examples(dataset_cfg("sql"), "train")
    example = examples[0]
    assert example.prompt == (
        "Write a SQL query to answer the question based on the table schema.\n\n context: "
        f"{example.meta['context']}\n\n question: {example.meta['question']}\n\n answer:"
    )
    assert example.prompt + get_spec("sql").separator + example.target == (
        "Write a SQL query to answer the question based on the table schema.\n\n context: "
        f"{example.meta['context']}\n\n question: {example.meta['question']}" + "\n\n answer: " + example.target
    )
    assert example.meta["context"].startswith("CREATE TABLE") and example.target.startswith("SELECT ")


def test_eli5_is_language_modelling():
    spec = get_spec("eli5")
    examples, _ = load_examples(dataset_cfg("eli5"), "train")
    assert spec.eval_kind == "lm" and spec.block_size == 128
    assert all(e.prompt == "" and e.target for e in examples)
    assert eval_examples(spec, examples) == examples
