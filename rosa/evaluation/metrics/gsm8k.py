"""GSM8k exact match with the two answer filters of lm-evaluation-harness (``gsm8k.yaml`` v3).

* ``strict``: the first match of ``#### (\\-?[0-9\\.\\,]+)`` (group 1);
* ``flexible``: the last match of ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` (its non-empty group).

No match gives ``"[invalid]"`` (never correct).  Before comparing, both the extracted answer and
the gold answer are normalised: ``,`` and ``$`` removed, anything up to ``"#### "`` removed, one
trailing ``.`` removed, lower-cased.  The gold is the text after the last ``####`` of the reference
answer (the whole reference when it has no ``####``).  Scores are fractions in 0-1.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["INVALID", "extract_strict", "extract_flexible", "normalize", "gold_answer", "score", "postprocess"]

INVALID = "[invalid]"
_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = tuple(re.compile(p) for p in (r",", r"\$", r"(?s).*#### ", r"\.$"))
_STOP = "Question:"


def extract_strict(text: str) -> str:
    found = _STRICT.findall(text)
    return found[0].strip() if found else INVALID


def extract_flexible(text: str) -> str:
    found = _FLEXIBLE.findall(text)
    if not found:
        return INVALID
    groups = [g for g in found[-1] if g]
    return groups[0].strip() if groups else INVALID


def normalize(answer: str) -> str:
    for pattern in _IGNORE:
        answer = pattern.sub("", answer)
    return answer.lower()


def gold_answer(reference: str) -> str:
    return reference.split("####")[-1].strip()


def score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    strict = flexible = 0
    for pred, refs in zip(predictions, references, strict=True):
        golds = {normalize(gold_answer(r)) for r in refs}
        strict += normalize(extract_strict(pred)) in golds
        flexible += normalize(extract_flexible(pred)) in golds
    n = len(predictions)
    return {"exact_match_strict": strict / n, "exact_match_flexible": flexible / n}


def postprocess(text: str) -> str:
    """Cut at the first ``Question:`` (lm-eval's stop sequence); extraction happens in :func:`score`."""
    return text.split(_STOP, 1)[0].strip()
