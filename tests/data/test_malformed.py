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


def _e2e_train(tmp_path, data: bytes):
    (tmp_path / "trainset.csv").write_bytes(data)
    return load_examples(dataset_cfg("e2e", source="local", path=str(tmp_path)), "train")


def test_unbalanced_quote_merging_rows_is_reported(tmp_path):
    """An unbalanced quote swallows the next line into one cell: the row is kept but counted and logged."""
    examples, report = _e2e_train(tmp_path, b'mr,ref\nname[A],"A is a pub.\nname[B],B is a bar.\nname[C],C.\n')
    assert len(examples) == 1 and report.suspect == 1
    assert (
        "1 kept rows to check (first: row 1: a cell spans 3 lines (an unbalanced quote merges rows))"
        in report.summary()
    )


def test_stray_quote_is_reported(tmp_path):
    examples, report = _e2e_train(tmp_path, b'mr,ref\nname[A],A is 5" tall.\nname[B],"B said ""hi""."\n')
    assert [e.target for e in examples] == ['A is 5" tall.', 'B said "hi".']  # doubled quotes are valid CSV
    assert (
        report.suspect == 1 and report.first_suspect_row == 1 and "invalid CSV quoting" in report.first_suspect_reason
    )


@pytest.mark.parametrize(
    "name, split, data, line",
    [
        ("e2e", "train", b"mr,ref\nname[A],A.\nname[B],B \xe9t\xe9.\n", 3),
        ("gsm8k", "test", b'{"question": "q", "answer": "#### 1"}\n{"question": "\xff", "answer": "#### 2"}\n', 2),
    ],
)
def test_non_utf8_names_file_and_line(tmp_path, name, split, data, line):
    file = {"e2e": "trainset.csv", "gsm8k": "test.jsonl"}[name]
    (tmp_path / file).write_bytes(data)
    with pytest.raises(DataError) as error:
        load_examples(dataset_cfg(name, source="local", path=str(tmp_path)), split)
    assert f"{tmp_path / file}: line {line} is not UTF-8" in str(error.value) and "\n" not in str(error.value)


def test_truncated_gzip_names_the_file(tmp_path):
    rows = [{"q_id": str(i), "answers": {"text": ["Yes, quite."]}} for i in range(200)]
    data = gzip.compress(json.dumps(rows).encode())
    (tmp_path / "eli5-category-test.json.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as error:
        load_examples(dataset_cfg("eli5", source="local", path=str(tmp_path)), "test")
    assert f"{tmp_path / 'eli5-category-test.json.gz'}: not a gzipped JSON array (EOFError" in str(error.value)


def test_empty_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError) as error:
        _e2e_train(tmp_path, b"")
    assert str(tmp_path / "trainset.csv") in str(error.value) and "0 rows read" in str(error.value)
