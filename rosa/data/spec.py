"""The data layer's types: Example, DatasetSpec, LoadReport, FeatureStats and DataError.

A *raw row* is a dict in the dataset's original release schema (E2E ``{mr, ref}``, GSM8k
``{question, answer}``, ...). A ``DatasetSpec`` turns a raw row into an ``Example``: a rendered
prompt and the response to learn, and says how the dataset is scored: its metric names (headline
first), the part of a generated text that is scored (``postprocess``) and the scorer (``score``).
Every dataset module (``e2e.py``, ``gsm8k.py``, ...) builds exactly one spec, named as the module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANONICAL_SPLITS = ("train", "validation", "test")
EVAL_KINDS = ("generation", "lm")

RawRow = dict[str, Any]
# A reader yields (1-based row number, raw row); the row is None when the record could not be parsed.
RowReader = Callable[[Path], Iterator[tuple[int, RawRow | None]]]
# A scorer: (post-processed predictions, one list of references per prediction) -> {metric: value}.
Scorer = Callable[[Sequence[str], Sequence[Sequence[str]]], dict[str, float]]


class DataError(ValueError):
    """Bad data or data configuration. The message is one line: where, the bad value, what is allowed."""


@dataclass
class Example:
    id: str
    prompt: str  # rendered prompt, without the separator; "" for language modelling
    target: str  # the response text (no EOS); for language modelling the whole text
    references: list[str]  # every gold response for this prompt in the split
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MatchedSplit:
    """A source split that is a fixed set of rows of another split, found by content.

    For a source that lacks the split's own file (the hub holds only sql-create-context's single
    split, not RoSA's evaluation file), the rows are picked from ``parent`` by ``fingerprint``,
    listed one per line in ``fingerprints`` (in the split's order). Other canonical splits loaded
    from ``parent`` in the same configuration leave those rows out, so that they are never trained on.
    """

    parent: str  # the source split that holds the rows
    fingerprints: Path  # one fingerprint per line
    fingerprint: Callable[[Mapping[str, Any]], str]  # a raw row's content fingerprint

    def load(self) -> list[str]:
        return self.fingerprints.read_text(encoding="utf-8").split()


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    hub_id: str
    hub_config: str | None
    fields: tuple[str, ...]  # raw (release) field names a row must have
    hub_fields: Mapping[str, str]  # raw field name -> HF field name
    local_files: Mapping[str, str]  # source split name -> file name in `dataset.path`
    default_splits: Mapping[str, str]  # canonical split -> source split (or "carve:<source>")
    eval_kind: str  # "generation" | "lm"
    metrics: tuple[str, ...]  # every metric its evaluation reports, the headline first
    score: Scorer  # scores generated texts (for "lm": generated answers, an option of evaluation)
    postprocess: Callable[[str], str]  # a generated text -> the part that `score` gets
    render_prompt: Callable[[Mapping[str, Any]], str]
    target: Callable[[Mapping[str, Any]], str]
    read_local: RowReader  # reads one local file of the original release
    sample: Callable[[str, int, int], list[RawRow]]  # (canonical split, rows, seed) -> raw rows
    separator: str = " "  # text between prompt and target in the training sequence
    stop_strings: list[str] = field(default_factory=list)
    max_new_tokens: int = 256
    decoding: Mapping[str, Any] = field(default_factory=dict)
    carve_rows: int = 1000  # rows per split carved out of a source split ("carve:<source>")
    block_size: int | None = None  # language modelling: fixed block length in tokens
    matched_splits: Mapping[str, MatchedSplit] = field(default_factory=dict)  # source split -> rows of another
    # a metric that `score` may have to approximate -> the other name it then reports it under
    metric_fallbacks: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.eval_kind not in EVAL_KINDS:
            raise DataError(f"DatasetSpec {self.name}: eval_kind {self.eval_kind!r}; allowed: {', '.join(EVAL_KINDS)}")
        if self.eval_kind == "lm" and not self.block_size:
            raise DataError(f"DatasetSpec {self.name}: eval_kind 'lm' needs a block_size")
        if not self.metrics or len(set(self.metrics)) != len(self.metrics):
            raise DataError(
                f"DatasetSpec {self.name}: metrics {self.metrics!r}; allowed: distinct names, headline first"
            )

    @property
    def headline_metric(self) -> str:
        """The one metric a dataset is compared on (tables, figures): the first of ``metrics``."""
        return self.metrics[0]


@dataclass
class LoadReport:
    dataset: str
    split: str  # canonical split
    origin: str  # where the rows came from: a file path, "hub <id>:<split>", or "sample"
    rows_read: int = 0
    kept: int = 0
    malformed: int = 0
    first_bad_row: int | None = None
    first_bad_reason: str | None = None
    carved_out: int = 0  # rows of the source split that belong to a carved split
    over_limit: int = 0  # valid rows dropped by `dataset.limit`
    suspect: int = 0  # rows kept whose format looks wrong (a CSV cell over several lines: merged rows)
    first_suspect_row: int | None = None
    first_suspect_reason: str | None = None

    def skip(self, row_number: int, reason: str) -> None:
        self.malformed += 1
        if self.first_bad_row is None:
            self.first_bad_row, self.first_bad_reason = row_number, reason

    def flag(self, row_number: int, reason: str) -> None:
        self.suspect += 1
        if self.first_suspect_row is None:
            self.first_suspect_row, self.first_suspect_reason = row_number, reason

    def summary(self) -> str:
        line = (
            f"{self.dataset}/{self.split} from {self.origin}: {self.rows_read} rows read, {self.kept} kept, "
            f"{self.malformed} malformed skipped, {self.carved_out} carved out, {self.over_limit} over limit"
        )
        if self.first_bad_row is not None:
            line += f" (first malformed: row {self.first_bad_row}: {self.first_bad_reason})"
        if self.suspect:
            line += (
                f"; {self.suspect} kept rows to check (first: row {self.first_suspect_row}: "
                f"{self.first_suspect_reason})"
            )
        return line


@dataclass
class FeatureStats:
    examples: int = 0
    features: int = 0
    truncated: int = 0  # target cut to fit max_length (EOS lost with it)
    skipped_long_prompt: int = 0  # prompt alone >= max_length
    boundary_fallbacks: int = 0  # prompt tokens were not a prefix of prompt+target tokens
    tokens: int = 0  # tokens in all features
    label_tokens: int = 0  # tokens that carry a loss
    dropped_tail_tokens: int = 0  # language modelling: the last partial block

    def summary(self) -> str:
        return (
            f"{self.features} features from {self.examples} examples: {self.truncated} truncated, "
            f"{self.skipped_long_prompt} skipped (prompt too long), {self.tokens} tokens, "
            f"{self.label_tokens} with loss, {self.dropped_tail_tokens} tail tokens dropped"
        )
