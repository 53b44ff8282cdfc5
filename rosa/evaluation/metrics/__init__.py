"""Per-dataset evaluation metrics.

```python
from rosa.evaluation.metrics import compute_metrics, postprocess, HEADLINE
text = postprocess("sql", generated_text)                    # the part that is scored
scores = compute_metrics("sql", [text, ...], [[gold, ...], ...])   # {"exact_match": 0.71, ...}
scores[HEADLINE["sql"]]
```

``references[i]`` lists every reference of example ``i`` (E2E: all references of one unique MR).
Every value is a float.  Exact-match style scores are fractions in 0-1.  The E2E scores are on
the scale the official E2E scorer prints: BLEU, METEOR and ROUGE-L in 0-1 (BLEU is *not* x100),
NIST unbounded (about 8-9 for good systems), CIDEr x10-scaled (about 2).

| dataset | metrics (headline first) |
| --- | --- |
| e2e | bleu, nist, meteor, rouge_l, cider |
| gsm8k | exact_match_strict, exact_match_flexible |
| viggo | exact_match, slot_precision, slot_recall, slot_f1, da_accuracy |
| sql | exact_match, normalized_match |
| eli5 | rouge_l (perplexity and bits per token: :func:`lm_metrics`, from the loss) |

E2E METEOR is Meteor 1.5 run as the official scorer runs it (Java and ``pycocoevalcap``; see
:mod:`rosa.evaluation.metrics.meteor`). Without Java the result holds ``meteor_nltk`` (NLTK's
approximation, not comparable; it needs WordNet 3.0 offline, see :mod:`rosa.evaluation.metrics.wordnet`,
else NaN) in place of ``meteor``, with a warning.
"""

from __future__ import annotations

from typing import Callable, Sequence

from . import e2e, eli5, gsm8k, sql, viggo
from .eli5 import lm_metrics

__all__ = ["HEADLINE", "METRIC_NAMES", "DATASETS", "compute_metrics", "postprocess", "lm_metrics"]

HEADLINE: dict[str, str] = {
    "e2e": "bleu",
    "gsm8k": "exact_match_strict",
    "viggo": "exact_match",
    "sql": "exact_match",
    "eli5": "rouge_l",
}

METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "e2e": e2e.METRICS,
    "gsm8k": ("exact_match_strict", "exact_match_flexible"),
    "viggo": ("exact_match", "slot_precision", "slot_recall", "slot_f1", "da_accuracy"),
    "sql": ("exact_match", "normalized_match"),
    "eli5": ("rouge_l",),
}

_MODULES = {"e2e": e2e, "gsm8k": gsm8k, "viggo": viggo, "sql": sql, "eli5": eli5}
DATASETS = tuple(_MODULES)
_SCORERS: dict[str, Callable[[Sequence[str], Sequence[Sequence[str]]], dict[str, float]]] = {
    name: module.score for name, module in _MODULES.items()
}


def _module(dataset: str):
    try:
        return _MODULES[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r} for metrics; known: {', '.join(DATASETS)}") from None


def compute_metrics(dataset: str, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Score post-processed ``predictions`` against ``references`` (one list per prediction)."""
    module = _module(dataset)
    if len(predictions) != len(references):
        raise ValueError(f"{dataset}: {len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError(f"{dataset}: no predictions to score")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        raise ValueError(f"{dataset}: example {empty[0]} has no reference ({len(empty)} such examples)")
    scores = module.score(list(predictions), refs)
    fallbacks = getattr(module, "FALLBACK_NAMES", {})  # a metric the module could only approximate
    names = [name if name in scores else fallbacks[name] for name in METRIC_NAMES[dataset]]
    return {name: float(scores[name]) for name in names}


def postprocess(dataset: str, generated_text: str) -> str:
    """The part of a generated continuation that is scored (see each module's ``postprocess``)."""
    return _module(dataset).postprocess(generated_text)
