"""SQL: RoSA's chat-format evaluation file (local source) and its rows picked out of the hub by content."""

from __future__ import annotations

import dataclasses
import json

import datasets
import pytest

from rosa.data import eval_examples, get_spec, load_examples, loading, sql
from rosa.data.spec import MatchedSplit
from tests.data.conftest import dataset_cfg

ROSA_SPLITS = {"train": "train", "validation": "carve:train", "test": "rosa-valid"}  # the RoSA presets'


def chat_row(context: str, question: str, query: str) -> dict:
    content = f"{sql.INSTRUCTION}\n\n context: {context}\n\n question: {question}"
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": query}]}


def plain_rows(n: int) -> list[dict]:
    return [
        {
            "question": f"How many heads are older than {i}?",
            "context": "CREATE TABLE head (age INTEGER)",
            "answer": f"SELECT COUNT(*) FROM head WHERE age > {i}",
        }
        for i in range(n)
    ]


def test_chat_rows_read_as_release_rows(tmp_path):
    rows = [
        chat_row("CREATE TABLE t (a VARCHAR)", "What is a?", "SELECT a FROM t"),
        {"messages": [{"role": "user", "content": "Translate this."}, {"role": "assistant", "content": "x"}]},
        {"messages": "not a list"},
    ]
    (tmp_path / "valid.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = dataset_cfg("sql", source="local", path=str(tmp_path), splits=ROSA_SPLITS)
    examples, report = load_examples(cfg, "test")
    assert [(e.meta["context"], e.meta["question"], e.target) for e in examples] == [
        ("CREATE TABLE t (a VARCHAR)", "What is a?", "SELECT a FROM t")
    ]
    assert examples[0].prompt == rows[0]["messages"][0]["content"] + "\n\n answer:"  # RoSA's content + its suffix
    assert (report.malformed, report.first_bad_row) == (2, 2)  # not RoSA's prompt; not a chat row


def test_rosa_valid_file(shared_data):
    path = shared_data / "sql" / "valid.jsonl"
    cfg = dataset_cfg("sql", source="local", path=str(path.parent), splits=ROSA_SPLITS)
    examples, report = load_examples(cfg, "test")
    assert len(examples) == 1_000 and report.malformed == 0
    assert len(eval_examples(get_spec("sql"), examples)) == 1_000  # one scored query per row, as RoSA
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rosa_prompts = [r["messages"][0]["content"] + "\n\n answer:" for r in records]  # RoSA's content + suffix
    same = [e.prompt == p for e, p in zip(examples, rosa_prompts)]
    assert sum(same) == 976  # 24 differ only by spaces around a field: the loader strips every field
    assert all(" ".join(e.prompt.split()) == " ".join(p.split()) for e, p in zip(examples, rosa_prompts))
    assert [e.target for e in examples] == [r["messages"][1]["content"] for r in records]
    # the shipped fingerprints (hub matching) are those of these rows, in this order
    assert sql.ROSA_VALID_FINGERPRINTS.read_text().split() == [sql.fingerprint(e.meta) for e in examples]


@pytest.fixture
def hub_with_rosa_rows(tmp_path, monkeypatch):
    """A fake hub 'train' split of 30 rows, of which rows 20, 5 and 11 (in that order) are 'RoSA's'."""
    rows = plain_rows(30)
    picked = [rows[20], rows[5], rows[11]]
    fingerprints = tmp_path / "fingerprints.txt"
    fingerprints.write_text(
        "\n".join(sql.fingerprint(r) for r in picked) + "\n" + "0" * 16 + "\n"
    )  # one not on the hub
    spec = dataclasses.replace(
        get_spec("sql"), matched_splits={"rosa-valid": MatchedSplit("train", fingerprints, sql.fingerprint)}
    )
    monkeypatch.setattr(loading, "get_spec", lambda name: spec)
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, *, split, cache_dir=None: list(rows))
    return [r["answer"] for r in picked]


def test_hub_rows_matched_by_content_and_left_out_of_training(hub_with_rosa_rows):
    cfg = dataset_cfg("sql", source="hub", splits=ROSA_SPLITS)
    test, report = load_examples(cfg, "test")
    assert [e.target for e in test] == hub_with_rosa_rows  # RoSA's order
    assert report.origin.endswith("rows matching rosa-valid (3 of 4 found)")
    train, train_report = load_examples(cfg, "train")
    validation, _ = load_examples(cfg, "validation")
    trained_on = {e.target for e in train} | {e.target for e in validation}
    assert trained_on.isdisjoint(hub_with_rosa_rows) and len(trained_on) == 27
    assert train_report.carved_out == 3 + len(validation)


def test_default_splits_carve_as_before(hub_with_rosa_rows):
    cfg = dataset_cfg("sql", source="hub")  # no rosa-valid: nothing is left out
    sizes = {split: len(load_examples(cfg, split)[0]) for split in ("train", "validation", "test")}
    assert sizes == {"train": 24, "validation": 3, "test": 3}
