"""The hub source, tested by its configuration: datasets.load_dataset is replaced by a fake."""

from __future__ import annotations

import datasets
import pytest

from rosa.data import DataError, load_examples
from tests.data.conftest import dataset_cfg

FAKE_ROWS = {
    "e2e": [
        {"meaning_representation": "name[Aromi], eatType[pub]", "human_reference": "Aromi is a pub."},
        {"meaning_representation": "name[Aromi], eatType[pub]", "human_reference": "There is a pub, Aromi."},
    ],
    "viggo": [
        {
            "gem_id": "viggo-train-0",
            "meaning_representation": "give_opinion(name[Portal 2], rating[good])",
            "target": "Portal 2 is good.",
            "references": ["Portal 2 is good."],
        }
    ],
    "gsm8k": [{"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}],
    "sql": [
        {"question": f"q{i}?", "context": "CREATE TABLE t (a INTEGER)", "answer": f"SELECT a FROM t WHERE a = {i}"}
        for i in range(20)
    ],
    "eli5": [
        {
            "q_id": "1",
            "title": "Why?",
            "selftext": "",
            "answers": {"a_id": ["x", "y"], "text": ["One.", "Two."], "score": [2, 1]},
        }
    ],
}
EXPECTED_CALL = {
    "e2e": ("e2e_nlg", None, "validation"),
    "viggo": ("GEM/viggo", None, "validation"),
    "gsm8k": ("gsm8k", "main", "train"),
    "sql": ("b-mc2/sql-create-context", None, "train"),
    "eli5": ("eli5_category", None, "validation1"),
}


@pytest.fixture
def calls(monkeypatch):
    recorded = []

    def fake_load_dataset(path, name=None, *, split, cache_dir=None):
        recorded.append((path, name, split, cache_dir))
        return list(FAKE_ROWS[{v[0]: k for k, v in EXPECTED_CALL.items()}[path]])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return recorded


@pytest.mark.parametrize("name", list(FAKE_ROWS))
def test_hub_call_and_field_mapping(name, calls):
    examples, report = load_examples(dataset_cfg(name, source="hub", cache="/tmp/hf-cache"), "validation")
    hub_id, config, split = EXPECTED_CALL[name]
    assert calls == [(hub_id, config, split, "/tmp/hf-cache")]
    assert report.origin.startswith(f"hub {hub_id}") and examples
    first = examples[0]
    if name == "e2e":
        assert first.prompt == "Input: name[Aromi], eatType[pub] Output:" and first.target == "Aromi is a pub."
        assert first.references == ["Aromi is a pub.", "There is a pub, Aromi."]
    elif name == "viggo":
        assert first.target == "give_opinion(name[Portal 2], rating[good])"
        assert first.prompt.endswith("### Target sentence:\nPortal 2 is good.\n\n### Meaning representation:\n")
    elif name == "gsm8k":  # validation = carve:train: one of the rows of train
        assert first.prompt == "Question: What is 2 + 3?\nAnswer:" and first.target.endswith("#### 5")
    elif name == "sql":
        assert len(examples) == 2 and first.target.startswith("SELECT a FROM t")
    else:
        assert first.prompt == "" and first.target == "One. Two."


def test_hub_failure_is_one_line(monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("no route to host\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(DataError) as error:
        load_examples(dataset_cfg("e2e", source="hub"), "train")
    assert str(error.value) == (
        "dataset.splits.train: hub e2e_nlg:train could not be loaded: ConnectionError: no route to host"
    )
