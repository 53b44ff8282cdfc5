"""ViGGO meaning-representation metrics.

* ``exact_match``: the predicted MR string equals a reference after ``strip()`` (RoSA convention).
* ``slot_precision`` / ``slot_recall`` / ``slot_f1``: micro-averaged over the corpus, on the set of
  ``("__da__", act)`` plus one ``(attribute, value)`` pair per value -- list values like
  ``genres[action, puzzle]`` are split on ``", "`` and an empty value ``specifier[]`` gives
  ``(attribute, "")``.  Order-insensitive; an unparseable prediction has no pairs.  With several
  references the one giving the best per-example F1 is used.
* ``da_accuracy``: the dialogue act (function name) equals the reference's.

MR syntax: ``act(attr[value], attr[v1, v2], attr[])``.  Scores are fractions in 0-1.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["parse_mr", "mr_pairs", "score", "postprocess"]

_MR = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)
_SLOT = re.compile(r"([A-Za-z_]\w*)\s*\[([^\]]*)\]")
_MARKER = "### Meaning representation:\n"


def parse_mr(text: str) -> tuple[str, list[tuple[str, str]]] | None:
    """``(dialogue_act, [(attribute, value), ...])`` or ``None`` when ``text`` is not an MR."""
    m = _MR.match(text)
    if not m:
        return None
    pairs = []
    for attr, value in _SLOT.findall(m.group(2)):
        values = [v.strip() for v in value.split(", ")] if value.strip() else [""]
        pairs.extend((attr, v) for v in values)
    return m.group(1), pairs


def mr_pairs(text: str) -> set[tuple[str, str]]:
    parsed = parse_mr(text)
    if parsed is None:
        return set()
    act, pairs = parsed
    return {("__da__", act), *pairs}


def _f1(tp: int, n_pred: int, n_gold: int) -> float:
    return 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 1.0


def score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    exact = da_ok = tp = n_pred = n_gold = 0
    for pred, refs in zip(predictions, references, strict=True):
        pred = pred.strip()
        refs = [r.strip() for r in refs]
        exact += pred in refs
        p = mr_pairs(pred)
        best = max((mr_pairs(r) for r in refs), key=lambda g: _f1(len(p & g), len(p), len(g)))
        tp, n_pred, n_gold = tp + len(p & best), n_pred + len(p), n_gold + len(best)
        pred_act = parse_mr(pred)
        gold_acts = {parsed[0] for parsed in map(parse_mr, refs) if parsed}
        da_ok += pred_act is not None and pred_act[0] in gold_acts
    n = len(predictions)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "exact_match": exact / n,
        "slot_precision": precision,
        "slot_recall": recall,
        "slot_f1": f1,
        "da_accuracy": da_ok / n,
    }


def postprocess(text: str) -> str:
    """The first line after the ``### Meaning representation:`` marker (if present), stripped.

    RoSA applies ``### Meaning representation:\\n(.*)`` to prompt + generation; for a generation
    alone this is its first line.
    """
    if _MARKER in text:
        text = text.rsplit(_MARKER, 1)[1]
    return text.split("\n", 1)[0].strip()
