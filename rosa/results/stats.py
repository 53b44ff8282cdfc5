"""Seeds and intervals: mean +- standard deviation over seeds, and the paired bootstrap against a baseline.

A method's difference to the baseline (LoRA) is the mean over the seeds both have of
``metric(method, seed) - metric(baseline, seed)``, each metric computed on the same evaluation rows.
Its 95% interval comes from the paired bootstrap (Efron & Tibshirani 1993; Koehn 2004 for MT): each
resample draws the rows with replacement, independently within each seed, applies the same draw to
both methods, and recomputes the mean difference; the interval is the 2.5th-97.5th percentile of
``resamples`` such differences. The rows' uncertainty is resampled; the seeds' is in the spread over
seeds (only 3 here), so the interval is about these seeds' evaluation, not about every seed.

Metrics must be functions of per-row counts summed over the corpus (``rosa.data.viggo.row_counts`` /
``metrics_from_counts``): a resample is a weighted sum, no re-parsing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Scorer = Callable[[Sequence[float], int], dict]  # (summed row counts, rows) -> {metric: value}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; NaN for one value)."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass
class Difference:
    metric: str
    seeds: int
    mean: float
    low: float
    high: float

    @property
    def resolved(self) -> bool:
        """Whether the 95% interval excludes 0."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    method: Sequence[np.ndarray],
    baseline: Sequence[np.ndarray],
    score: Scorer,
    metrics: Sequence[str],
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Difference]:
    """``method[s]`` and ``baseline[s]``: the per-row counts (rows x counts, rows in the same order) of
    seed ``s``; one :class:`Difference` per metric. Deterministic for a given ``seed``."""
    if len(method) != len(baseline) or not method:
        raise ValueError(f"paired bootstrap needs the same seeds for both: {len(method)} vs {len(baseline)}")
    for a, b in zip(method, baseline):
        if a.shape != b.shape:
            raise ValueError(f"paired bootstrap needs the same rows for both: {a.shape} vs {b.shape}")
    rng = np.random.default_rng(seed)

    def diffs(draws: list[np.ndarray | None]) -> dict[str, float]:
        total = dict.fromkeys(metrics, 0.0)
        for a, b, rows in zip(method, baseline, draws):
            n = len(a)
            sa, sb = (a.sum(0), b.sum(0)) if rows is None else (a[rows].sum(0), b[rows].sum(0))
            ma, mb = score(sa.tolist(), n), score(sb.tolist(), n)
            for m in metrics:
                total[m] += (ma[m] - mb[m]) / len(method)
        return total

    observed = diffs([None] * len(method))
    samples = {m: np.empty(resamples) for m in metrics}
    for i in range(resamples):
        draw = diffs([rng.integers(0, len(a), len(a)) for a in method])
        for m in metrics:
            samples[m][i] = draw[m]
    return {
        m: Difference(
            m, len(method), observed[m], float(np.percentile(samples[m], 2.5)), float(np.percentile(samples[m], 97.5))
        )
        for m in metrics
    }
