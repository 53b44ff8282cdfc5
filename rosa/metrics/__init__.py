"""Metric libraries that are not tied to one dataset; a leaf: nothing here imports the rest of rosa.

- ``e2e``: the official E2E NLG scorer (``measure_scores.py``) re-implemented: BLEU, NIST, METEOR,
  ROUGE-L and CIDEr on the scale it prints;
- ``meteor``: Meteor 1.5 run from pycocoevalcap's jar, as that scorer runs it;
- ``rouge``: COCO-style ROUGE-L (LCS, max precision and max recall, beta 1.2);
- ``tokenizers``: mteval-v13a and Stanford-PTB-style tokenisation;
- ``wordnet``: offline WordNet 3.0 for NLTK's METEOR (the fallback without Java);
- ``perplexity``: perplexity and bits per token from a mean token NLL.

The dataset modules (``rosa/data/<name>.py``) build their scoring from these; evaluation reads it
from each dataset's spec (``rosa.evaluation.scoring.compute_metrics``). :func:`lower_is_better` is a
metric's direction, for the tables' best values and training's best checkpoint alike.
"""

LOWER_IS_BETTER = ("ppl", "bits_per_token", "loss")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better: a loss or a perplexity (every other metric a
    dataset reports is a score: BLEU, exact match, slot F1, ...)."""
    return metric in LOWER_IS_BETTER or metric.endswith(("_ppl", "_loss"))
