"""Load one canonical split ("train", "validation", "test") of a dataset as Examples.

``dataset_cfg`` (a DictConfig or any object with these attributes):
  name, source ("sample" | "local" | "hub"), path (local: directory), cache (hub: cache dir),
  splits (canonical split -> source split), max_length, sample_rows, sample_seed, limit.

Sources:
- ``sample``: the dataset module generates ``sample_rows[split]`` raw rows from
  ``sample_seed`` (``splits`` is not used).
- ``local``: ``path`` is a directory in the original release format; a source split name is
  looked up in ``spec.local_files`` (e.g. E2E ``validation`` -> ``devset.csv``), any other value is
  taken as a file name in that directory.
- ``hub``: ``datasets.load_dataset(spec.hub_id, spec.hub_config, split=..., cache_dir=cache)``;
  HF field names are renamed to the release names (``spec.hub_fields``).

Matched splits (``spec.matched_splits``, e.g. SQL's ``rosa-valid``): a source split that is a fixed
set of rows of another split, known by content fingerprints. The hub source picks those rows out of
the parent split (in the fingerprints' order); the local source reads the split's own file. Any
split loaded from the parent in a configuration that uses the matched split leaves its rows out
(counted as carved out), before carving.

Carving: a split value ``carve:<source>`` takes a held-out part of source split ``<source>``.
The source's rows (all records, malformed ones included) are permuted with
``random.Random("rosa-carve")``; the carved canonical splits take consecutive slices of
``min(spec.carve_rows, max(1, n // 10))`` rows each, test first, then validation, and any
canonical split mapped plainly to ``<source>`` gets the remaining rows. Every part keeps file
order. Without a ``carve:`` value nothing is removed from a source split.

Format notes: a row the reader flags (a CSV cell over several lines, invalid quoting: see
``readers.py``) is kept and counted in the LoadReport's ``suspect`` (logged with the first row).

Row checks: a row whose record did not parse, misses a field, has an empty text field or gives
an empty target is skipped and counted in the LoadReport (with the first bad row number). A
split with no valid row is a DataError naming the file. ``limit`` keeps the first N valid
examples; references are collected before the limit, so they stay complete.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from rosa.data.registry import get_spec
from rosa.data.spec import CANONICAL_SPLITS, DataError, DatasetSpec, Example, LoadReport, MatchedSplit, RawRow

SOURCES = ("sample", "local", "hub")
DEFAULT_SAMPLE_ROWS = {"train": 500, "validation": 50, "test": 50}
CARVE_PREFIX = "carve:"
CARVE_SEED = "rosa-carve"
CARVE_ORDER = ("test", "validation", "train")

NumberedRows = list[tuple[int, RawRow | None]]


def load_examples(dataset_cfg: Any, split: str) -> tuple[list[Example], LoadReport]:
    spec = get_spec(getattr(dataset_cfg, "name", None))
    if split not in CANONICAL_SPLITS:
        raise DataError(f"load_examples split: {split!r}; allowed: {', '.join(CANONICAL_SPLITS)}")
    source = getattr(dataset_cfg, "source", "sample")
    if source == "sample":
        seed = getattr(dataset_cfg, "sample_seed", 0) or 0
        rows = list(enumerate(spec.sample(split, _sample_rows(dataset_cfg, split), seed), start=1))
        report = LoadReport(spec.name, split, f"sample (seed {seed})")
        examples = _to_examples(spec, split, f"sample-{split}", rows, report)
    elif source in ("local", "hub"):
        source_split, carved = _split_value(dataset_cfg, spec, split)
        rows, origin = (_local_rows if source == "local" else _hub_rows)(dataset_cfg, spec, split, source_split)
        report = LoadReport(spec.name, split, origin)
        kept_rows = _leave_out_matched(dataset_cfg, spec, source_split, rows)
        kept_rows = _carve(dataset_cfg, spec, split, source_split, carved, kept_rows)
        report.carved_out = len(rows) - len(kept_rows)
        examples = _to_examples(spec, split, source_split, kept_rows, report)
    else:
        raise DataError(f"dataset.source: {source!r}; allowed: {', '.join(SOURCES)}")
    return _apply_limit(dataset_cfg, examples, report), report


def eval_examples(spec: DatasetSpec, examples: list[Example]) -> list[Example]:
    """One example per unique prompt (first appearance), with the references of all its rows."""
    if spec.eval_kind == "lm":
        return list(examples)
    groups: dict[str, tuple[Example, list[str]]] = {}
    for example in examples:
        first, references = groups.setdefault(example.prompt, (example, []))
        for reference in [*example.references, example.target]:
            if reference not in references:
                references.append(reference)
    return [replace(first, references=references) for first, references in groups.values()]


# --- configuration values ---


def _mapping_value(mapping: Any, key: str, default: Any = None) -> Any:
    return mapping.get(key, default) if isinstance(mapping, Mapping) else getattr(mapping, key, default)


def _sample_rows(dataset_cfg: Any, split: str) -> int:
    rows = _mapping_value(getattr(dataset_cfg, "sample_rows", None) or {}, split, DEFAULT_SAMPLE_ROWS[split])
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise DataError(f"dataset.sample_rows.{split}: {rows!r}; allowed: an integer >= 1")
    return rows


def _split_value(dataset_cfg: Any, spec: DatasetSpec, split: str) -> tuple[str, bool]:
    """(source split, whether it is carved) for a canonical split."""
    value = _configured_split(dataset_cfg, spec, split)
    if not isinstance(value, str) or not value.strip():
        raise DataError(
            f"dataset.splits.{split}: {value!r}; allowed: a source split ({', '.join(spec.local_files)}), "
            f"a file name (local) or carve:<source split>"
        )
    if value.startswith(CARVE_PREFIX):
        return value[len(CARVE_PREFIX) :].strip(), True
    return value.strip(), False


def _configured_split(dataset_cfg: Any, spec: DatasetSpec, split: str) -> Any:
    splits = getattr(dataset_cfg, "splits", None) or spec.default_splits
    return _mapping_value(splits, split, spec.default_splits.get(split))


def _apply_limit(dataset_cfg: Any, examples: list[Example], report: LoadReport) -> list[Example]:
    limit = getattr(dataset_cfg, "limit", None)
    if limit is None:
        return examples
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise DataError(f"dataset.limit: {limit!r}; allowed: null or an integer >= 1")
    report.over_limit = max(0, len(examples) - limit)
    report.kept = min(len(examples), limit)
    return examples[:limit]


# --- sources ---


def _local_rows(dataset_cfg: Any, spec: DatasetSpec, split: str, source_split: str) -> tuple[NumberedRows, str]:
    path = getattr(dataset_cfg, "path", None)
    expected = ", ".join(f"{name} ({file})" for name, file in spec.local_files.items())
    if not path:
        raise DataError(
            f"dataset.path: {path!r}; source 'local' needs the directory with {spec.name}'s files: {expected}"
        )
    directory = Path(str(path)).expanduser()
    if not directory.is_dir():
        raise DataError(f"dataset.path: {str(directory)!r} is not a directory; expected one holding {expected}")
    file = directory / spec.local_files.get(source_split, source_split)
    if not file.is_file():
        present = ", ".join(sorted(entry.name for entry in directory.iterdir() if entry.is_file())) or "none"
        raise DataError(
            f"dataset.splits.{split}: {source_split!r} needs missing file {file}; files present: {present}; "
            f"split names: {expected}"
        )
    return list(spec.read_local(file)), str(file)


def _hub_rows(dataset_cfg: Any, spec: DatasetSpec, split: str, source_split: str) -> tuple[NumberedRows, str]:
    import datasets  # imported here: loading the sample and local sources never needs it

    matched = spec.matched_splits.get(source_split)
    hub_split = matched.parent if matched else source_split
    origin = f"hub {spec.hub_id}" + (f"/{spec.hub_config}" if spec.hub_config else "") + f":{hub_split}"
    try:
        table = datasets.load_dataset(
            spec.hub_id, spec.hub_config, split=hub_split, cache_dir=getattr(dataset_cfg, "cache", None)
        )
    except Exception as error:  # network, missing split, cache: report it as one line
        message = (str(error).strip().splitlines() or [""])[0]
        raise DataError(
            f"dataset.splits.{split}: {origin} could not be loaded: {type(error).__name__}: {message}"
        ) from error
    hub_names = set(spec.hub_fields.values())
    rows: NumberedRows = []
    for number, item in enumerate(table, start=1):
        row = {key: value for key, value in item.items() if key not in hub_names}
        row.update({raw: item[hub] for raw, hub in spec.hub_fields.items() if hub in item})
        rows.append((number, row))
    if matched is None:
        return rows, origin
    rows = _matched_rows(matched, rows)
    return rows, f"{origin} rows matching {source_split} ({len(rows)} of {len(matched.load())} found)"


def _matched_rows(matched: MatchedSplit, rows: NumberedRows) -> NumberedRows:
    """The rows of ``matched`` (first occurrence of each fingerprint), in the fingerprints' order."""
    by_fingerprint: dict[str, tuple[int, RawRow | None]] = {}
    for number, row in rows:
        if row is not None:
            by_fingerprint.setdefault(matched.fingerprint(row), (number, row))
    return [by_fingerprint[f] for f in matched.load() if f in by_fingerprint]


def _leave_out_matched(dataset_cfg: Any, spec: DatasetSpec, source_split: str, rows: NumberedRows) -> NumberedRows:
    """``rows`` of ``source_split`` without those of a matched split that this configuration also uses."""
    used = [
        spec.matched_splits.get(str(_configured_split(dataset_cfg, spec, name)).strip()) for name in CANONICAL_SPLITS
    ]
    inside = [(m, set(m.load())) for m in used if m is not None and m.parent == source_split]
    if not inside:
        return rows
    return [(n, row) for n, row in rows if row is None or not any(m.fingerprint(row) in f for m, f in inside)]


def _carve(
    dataset_cfg: Any, spec: DatasetSpec, split: str, source_split: str, carved: bool, rows: NumberedRows
) -> NumberedRows:
    carvers = []
    for name in CARVE_ORDER:
        value = _configured_split(dataset_cfg, spec, name)
        if (
            isinstance(value, str)
            and value.startswith(CARVE_PREFIX)
            and value[len(CARVE_PREFIX) :].strip() == source_split
        ):
            carvers.append(name)
    if not carvers:
        return rows
    size = min(spec.carve_rows, max(1, len(rows) // 10))
    order = list(range(len(rows)))
    random.Random(CARVE_SEED).shuffle(order)
    parts = {name: set(order[index * size : (index + 1) * size]) for index, name in enumerate(carvers)}
    if carved:
        wanted = parts[split]
    else:
        held_out = set().union(*parts.values())
        wanted = set(range(len(rows))) - held_out
    return [row for position, row in enumerate(rows) if position in wanted]


# --- rows -> examples ---


def _row_problem(spec: DatasetSpec, row: RawRow | None) -> str | None:
    if row is None:
        return "record could not be parsed"
    for name in spec.fields:
        value = row.get(name)
        if value is None:
            return f"missing field {name!r}"
        if isinstance(value, str) and not value.strip():
            return f"empty field {name!r}"
    return None


def _to_examples(
    spec: DatasetSpec, split: str, source_split: str, rows: NumberedRows, report: LoadReport
) -> list[Example]:
    examples: list[Example] = []
    for number, raw in rows:
        report.rows_read += 1
        note = getattr(raw, "format_note", None)
        if note:
            report.flag(number, note)
        problem = _row_problem(spec, raw)
        if problem is None:
            row = {key: value.strip() if isinstance(value, str) else value for key, value in raw.items()}
            try:
                prompt, target = spec.render_prompt(row), spec.target(row)
            except (KeyError, TypeError, AttributeError) as error:
                problem = f"unusable row ({type(error).__name__}: {error})"
            else:
                problem = None if isinstance(target, str) and target.strip() else "empty target"
        if problem is not None:
            report.skip(number, problem)
            continue
        meta = {
            "row": number,
            "source_split": source_split,
            **{key: value for key, value in row.items() if isinstance(value, str)},
        }
        examples.append(Example(f"{spec.name}:{source_split}:{number}", prompt, target, [], meta))
    if not examples:
        first = (
            f"; first malformed row {report.first_bad_row}: {report.first_bad_reason}" if report.first_bad_row else ""
        )
        raise DataError(
            f"{report.origin}: no valid {spec.name} row for split {split!r} "
            f"({report.rows_read} rows read, {report.carved_out} carved out{first})"
        )
    if spec.eval_kind == "lm":
        for example in examples:
            example.references = [example.target]
    else:
        references: dict[str, list[str]] = {}
        for example in examples:
            group = references.setdefault(example.prompt, [])
            if example.target not in group:
                group.append(example.target)
        for example in examples:
            example.references = list(references[example.prompt])
    report.kept = len(examples)
    return examples
