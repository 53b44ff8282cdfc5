"""ELI5 metrics: ROUGE-L of generated answers, and perplexity helpers for the language-model loss.

``rouge_l`` is the COCO-style ROUGE-L F (beta 1.2, max precision and max recall over the
references, mean over examples) on PTB-style, lower-cased, punctuation-free tokens -- the same
definition as the E2E ROUGE-L.  Validation perplexity and bits per token come from the mean
token negative log-likelihood (in nats) that the evaluator computes: see :func:`lm_metrics`.
"""

from __future__ import annotations

import math
from typing import Sequence

from .rouge import rouge_l_corpus
from .tokenizers import ptb_tokenize

__all__ = ["score", "lm_metrics", "postprocess"]


def score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    pred_tok = [ptb_tokenize(p.strip()) for p in predictions]
    ref_tok = [[ptb_tokenize(r.strip()) for r in refs] for refs in references]
    return {"rouge_l": float(rouge_l_corpus(pred_tok, ref_tok))}


def lm_metrics(mean_nll_nats: float) -> dict[str, float]:
    """``ppl = exp(nll)`` and ``bits_per_token = nll / ln 2`` from a mean NLL in nats per token."""
    nll = float(mean_nll_nats)
    return {"ppl": math.exp(nll) if nll < 709.0 else math.inf, "bits_per_token": nll / math.log(2.0)}


def postprocess(text: str) -> str:
    return text.strip()
