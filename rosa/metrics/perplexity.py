"""Language-model scores from the mean token negative log-likelihood (in nats) over a split."""

from __future__ import annotations

import math

__all__ = ["LM_METRICS", "lm_metrics"]

#: What :func:`lm_metrics` reports, in this order.
LM_METRICS = ("ppl", "bits_per_token", "loss")


def lm_metrics(mean_nll_nats: float) -> dict[str, float]:
    """``ppl = exp(nll)``, ``bits_per_token = nll / ln 2`` and ``loss = nll`` from a mean NLL in nats per token."""
    nll = float(mean_nll_nats)
    return {"ppl": math.exp(nll) if nll < 709.0 else math.inf, "bits_per_token": nll / math.log(2.0), "loss": nll}
