"""SQL local source: a JSON array or JSON Lines file carved deterministically into train/validation/test."""

from __future__ import annotations

import json

from rosa.data import load_examples
from tests.data.conftest import dataset_cfg


def rows(n: int) -> list[dict]:
    return [
        {
            "question": f"How many heads are older than {i}?",
            "context": "CREATE TABLE head (age INTEGER)",
            "answer": f"SELECT COUNT(*) FROM head WHERE age > {i}",
        }
        for i in range(n)
    ]


def carve(path) -> dict[str, list[str]]:
    cfg = dataset_cfg("sql", source="local", path=str(path))
    return {split: [e.target for e in load_examples(cfg, split)[0]] for split in ("train", "validation", "test")}


def test_json_array_and_jsonl_carve_identically(tmp_path):
    (tmp_path / "array").mkdir()
    (tmp_path / "lines").mkdir()
    (tmp_path / "array" / "sql_create_context_v4.json").write_text(json.dumps(rows(200)))
    (tmp_path / "lines" / "sql_create_context_v4.json").write_text("\n".join(json.dumps(r) for r in rows(200)) + "\n")
    parts = carve(tmp_path / "array")
    assert {split: len(targets) for split, targets in parts.items()} == {"train": 160, "validation": 20, "test": 20}
    assert parts == carve(tmp_path / "lines") == carve(tmp_path / "array")  # deterministic, format-independent
    everything = parts["train"] + parts["validation"] + parts["test"]
    assert sorted(everything) == sorted(r["answer"] for r in rows(200))  # a partition: disjoint and complete
    order = [r["answer"] for r in rows(200)]
    assert all(sorted(part, key=order.index) == part for part in parts.values())  # file order kept
    assert parts["test"] != order[:20]  # held-out rows are a permutation, not the head of the file


def test_carve_size_is_capped_at_1000(tmp_path):
    (tmp_path / "sql_create_context_v4.json").write_text("\n".join(json.dumps(r) for r in rows(12_000)))
    parts = carve(tmp_path)
    assert {split: len(targets) for split, targets in parts.items()} == {
        "train": 10_000,
        "validation": 1_000,
        "test": 1_000,
    }


def test_file_name_as_split_value(tmp_path):
    (tmp_path / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in rows(30)))
    cfg = dataset_cfg(
        "sql",
        source="local",
        path=str(tmp_path),
        splits={"train": "mine.jsonl", "validation": "carve:mine.jsonl", "test": "carve:mine.jsonl"},
    )
    sizes = {split: len(load_examples(cfg, split)[0]) for split in ("train", "validation", "test")}
    assert sizes == {"train": 24, "validation": 3, "test": 3}
