"""Readers for the original release file formats. Each yields (1-based row number, raw row or None).

- CSV with a header (E2E, ViGGO): read with the ``csv`` module, so quoted cells with commas,
  embedded line breaks and CRLF line endings are handled; a UTF-8 BOM is ignored.
- JSON records (GSM8k, SQL): either one JSON array of objects or JSON Lines; the first
  non-blank character decides. In JSON Lines the row number is the line number, blank lines are
  not rows, and an unparsable line yields None (counted as malformed by the loader).
- Gzipped JSON array (ELI5-Category): one array of question objects, not JSON Lines.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from rosa.data.schema import DataError, RawRow


def read_csv_rows(path: Path) -> Iterator[tuple[int, RawRow | None]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            # a short line gives None for missing columns; the row check reports them
            yield number, {key: value for key, value in row.items() if key is not None and value is not None}


def read_json_records(path: Path) -> Iterator[tuple[int, RawRow | None]]:
    text = Path(path).read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}: not valid JSON ({error.msg} at line {error.lineno}); expected a JSON array or JSON Lines"
            ) from error
        for number, record in enumerate(records, start=1):
            yield number, record if isinstance(record, dict) else None
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        yield number, record if isinstance(record, dict) else None


def read_json_gz_array(path: Path) -> Iterator[tuple[int, RawRow | None]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            records = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a gzipped JSON array ({type(error).__name__}: {error})") from error
    if not isinstance(records, list):
        raise DataError(f"{path}: holds a JSON {type(records).__name__}; expected one JSON array of question objects")
    for number, record in enumerate(records, start=1):
        yield number, record if isinstance(record, dict) else None
