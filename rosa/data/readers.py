"""Readers for the original release file formats. Each yields (1-based row number, raw row or None).

- CSV with a header (E2E, ViGGO): read with the ``csv`` module, so quoted cells with commas,
  embedded line breaks and CRLF line endings are handled; a UTF-8 BOM is ignored. A row whose
  cells span several lines, or whose quoting is not valid CSV (a quote inside an unquoted cell,
  text after a closing quote), is kept but flagged (``FlaggedRow.format_note``): an unbalanced
  quote merges the following rows into one cell, and the load report counts such rows.
- Text that is not UTF-8 is a DataError naming the file and the first bad line.
- JSON records (GSM8k, SQL): either one JSON array of objects or JSON Lines; the first
  non-blank character decides. In JSON Lines the row number is the line number, blank lines are
  not rows, and an unparsable line yields None (counted as malformed by the loader).
- Gzipped JSON array (ELI5-Category): one array of question objects, not JSON Lines.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from rosa.data.spec import DataError, RawRow


class FlaggedRow(dict):
    """A raw row with a note on its format (kept, and counted in the LoadReport)."""

    format_note: str | None = None


def read_csv_rows(path: Path) -> Iterator[tuple[int, RawRow | None]]:
    with _utf8_errors_named(path), open(path, encoding="utf-8-sig", newline="") as handle:
        lines = _LineRecorder(handle)
        reader = csv.DictReader(lines)
        _ = reader.fieldnames  # reads the header
        lines.take()
        for number, row in enumerate(reader, start=1):
            # a short line gives None for missing columns; the row check reports them
            flagged = FlaggedRow({key: value for key, value in row.items() if key is not None and value is not None})
            flagged.format_note = _csv_format_note(lines.take(), flagged.values())
            yield number, flagged


class _LineRecorder:
    """The lines the csv reader consumes, so that each row's raw text can be checked."""

    def __init__(self, lines: Iterable[str]):
        self.lines, self.taken = iter(lines), []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.taken.append(line)
        return line

    def take(self) -> list[str]:
        taken, self.taken = self.taken, []
        return taken


def _csv_format_note(raw_lines: list[str], values: Iterable[str]) -> str | None:
    if len(raw_lines) > 1:
        return f"a cell spans {len(raw_lines)} lines (an unbalanced quote merges rows)"
    try:
        list(csv.reader(raw_lines, strict=True))
    except csv.Error as error:
        return f"invalid CSV quoting ({error})"
    raw = "".join(raw_lines)
    for value in values:  # CSV allows a quote only inside a quoted cell, doubled
        if '"' in value and '"' + value.replace('"', '""') + '"' not in raw:
            return "invalid CSV quoting (a quote in an unquoted cell)"
    return None


class _utf8_errors_named:
    """Turn a UnicodeDecodeError while reading ``path`` into a DataError naming the file and line."""

    def __init__(self, path: Path, opener=open):
        self.path, self.opener = Path(path), opener

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if not isinstance(error, UnicodeDecodeError):
            return False
        with self.opener(self.path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as bad:
                    raise DataError(
                        f"{self.path}: line {number} is not UTF-8 (byte {line[bad.start]:#04x} at "
                        f"column {bad.start + 1}); allowed: UTF-8 text"
                    ) from None
        raise DataError(f"{self.path}: not UTF-8 ({error.reason}); allowed: UTF-8 text") from None


def read_json_records(path: Path) -> Iterator[tuple[int, RawRow | None]]:
    with _utf8_errors_named(path):
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
        with _utf8_errors_named(path, gzip.open), gzip.open(path, "rt", encoding="utf-8") as handle:
            records = json.load(handle)
    except (OSError, EOFError, zlib.error, json.JSONDecodeError) as error:  # EOFError: a truncated file
        raise DataError(
            f"{path}: not a gzipped JSON array ({type(error).__name__}: {error or 'truncated'}); "
            "allowed: a complete .json.gz file"
        ) from error
    if not isinstance(records, list):
        raise DataError(f"{path}: holds a JSON {type(records).__name__}; expected one JSON array of question objects")
    for number, record in enumerate(records, start=1):
        yield number, record if isinstance(record, dict) else None
