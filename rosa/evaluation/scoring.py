"""Scoring generated texts with their dataset's own metrics.

```python
from rosa.data import get_spec
from rosa.evaluation.scoring import compute_metrics, postprocess
text = postprocess("sql", generated_text)                    # the part that is scored
scores = compute_metrics("sql", [text, ...], [[gold, ...], ...])   # {"exact_match": 0.71, ...}
scores[get_spec("sql").headline_metric]
```

Everything dataset-specific lives in the dataset's module (``rosa/data/<name>.py``) and reaches
evaluation through its spec: ``spec.metrics`` (every metric evaluation reports, the headline first),
``spec.postprocess`` (generated text -> the part that is scored) and ``spec.score``. This module
only checks the inputs and orders the result as ``spec.metrics``.

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
| eli5 | ppl, bits_per_token, loss (from the loss: :func:`lm_metrics`), rouge_l (generated answers) |

E2E METEOR is Meteor 1.5 run as the official scorer runs it (Java and ``pycocoevalcap``; see
:mod:`rosa.metrics.meteor`). Without Java the result holds ``meteor_nltk`` (NLTK's
approximation, not comparable; it needs WordNet 3.0 offline, see :mod:`rosa.metrics.wordnet`,
else NaN) in place of ``meteor``, with a warning (``spec.metric_fallbacks``).
"""

from __future__ import annotations

from rosa.data import DATASETS, DatasetSpec
from rosa.metrics.perplexity import lm_metrics

__all__ = ["compute_metrics", "postprocess", "lm_metrics"]


def _spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r} for metrics; known: {', '.join(DATASETS)}") from None


def compute_metrics(dataset: str, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Score post-processed ``predictions`` against ``references`` (one list per prediction).

    The result holds the metrics of ``spec.metrics`` that the dataset's scorer reports, in that
    order; one it could only approximate is under its fallback name (``spec.metric_fallbacks``).
    """
    spec = _spec(dataset)
    if len(predictions) != len(references):
        raise ValueError(f"{dataset}: {len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError(f"{dataset}: no predictions to score")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        raise ValueError(f"{dataset}: example {empty[0]} has no reference ({len(empty)} such examples)")
    scores = spec.score(list(predictions), refs)
    names = [name if name in scores else spec.metric_fallbacks.get(name, name) for name in spec.metrics]
    unlisted = [name for name in scores if name not in names]
    if unlisted:
        raise ValueError(f"{dataset}: the scorer reports {', '.join(unlisted)}, which the spec's metrics do not list")
    missing = [name for name in names if name not in scores]
    if missing and spec.eval_kind == "generation":  # a language-modelling spec also lists the loss metrics
        raise ValueError(f"{dataset}: the scorer does not report {', '.join(missing)}")
    return {name: float(scores[name]) for name in names if name in scores}


def postprocess(dataset: str, generated_text: str) -> str:
    """The part of a generated continuation that is scored (the dataset module's ``postprocess``)."""
    return _spec(dataset).postprocess(generated_text)
