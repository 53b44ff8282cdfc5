"""Malformed rows are skipped and counted with the first row number; a file without valid rows is an error."""

from __future__ import annotations

import gzip
import json

import pytest

from rosa.data import DataError, load_examples
from tests.data.conftest import dataset_cfg


def test_csv_rows_missing_or_empty_are_counted(tmp_path):
    (tmp_path / "trainset.csv").write_text(
        'mr,ref\r\n"name[A], eatType[pub]","A is a pub."\r\n"name[B]",\r\n"name[C]","C,\r\nis a place."\r\n'
        '"name[D]"\r\n',
        encoding="utf-8",
    )
    examples, report = load_examples(dataset_cfg("e2e", source="local", path=str(tmp_path)), "train")
    assert [e.target for e in examples] == ["A is a pub.", "C,\r\nis a place."]
    assert report.rows_read == 4 and report.malformed == 2 and report.kept == 2
    assert (report.first_bad_row, report.first_bad_reason) == (2, "empty field 'ref'")
    assert "first malformed: row 2: empty field 'ref'" in report.summary() and "\n" not in report.summary()


def test_jsonl_bad_lines_are_counted(tmp_path):
    lines = [
        '{"question": "q1", "answer": "a\\n#### 1"}',
        "not json",
        '{"question": "q3"}',
        "",
        '{"question": "q5", "answer": "#### 5"}',
    ]
    (tmp_path / "test.jsonl").write_text("\n".join(lines))
    examples, report = load_examples(dataset_cfg("gsm8k", source="local", path=str(tmp_path)), "test")
    assert [e.meta["row"] for e in examples] == [1, 5] and examples[1].id == "gsm8k:test:5"
    assert (
        report.malformed == 2 and report.first_bad_row == 2 and report.first_bad_reason == "record could not be parsed"
    )


def test_eli5_answers_without_text_are_counted(tmp_path):
    rows = [{"q_id": "a", "answers": {"text": ["Yes."]}}, {"q_id": "b", "answers": {"text": []}}, {"q_id": "c"}]
    with gzip.open(tmp_path / "eli5-category-test.json.gz", "wt", encoding="utf-8") as handle:
        json.dump(rows, handle)
    examples, report = load_examples(dataset_cfg("eli5", source="local", path=str(tmp_path)), "test")
    assert len(examples) == 1 and report.malformed == 2 and report.first_bad_reason == "empty target"


def test_file_without_valid_rows_is_an_error(tmp_path):
    (tmp_path / "valid.csv").write_text("mr,sentence\ninform(name[X]),X.\n")
    with pytest.raises(DataError) as error:
        load_examples(dataset_cfg("viggo", source="local", path=str(tmp_path)), "validation")
    message = str(error.value)
    assert str(tmp_path / "valid.csv") in message and "no valid viggo row" in message
    assert "first malformed row 1: missing field 'ref'" in message and "\n" not in message
