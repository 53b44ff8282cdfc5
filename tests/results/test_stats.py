"""Mean +- std over seeds and the paired bootstrap (rosa/results/stats.py), on ViGGO's row counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rosa.data.viggo import metrics_from_counts, row_counts
from rosa.results.stats import mean_std, paired_bootstrap

METRICS = ["exact_match", "slot_f1"]


def counts(predictions, references):
    return np.array([row_counts(p, r) for p, r in zip(predictions, references)])


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    mean, std = mean_std([0.5])
    assert mean == 0.5 and math.isnan(std)


def test_the_same_outputs_differ_by_exactly_zero():
    """Pairing: both methods get the same resampled rows, so equal outputs give a zero-width interval."""
    rng = np.random.default_rng(1)
    seeds = [rng.integers(0, 3, size=(50, 5)) for _ in range(3)]
    diff = paired_bootstrap(seeds, [s.copy() for s in seeds], metrics_from_counts, METRICS, resamples=200)
    for d in diff.values():
        assert (d.mean, d.low, d.high, d.resolved, d.seeds) == (0.0, 0.0, 0.0, False, 3)


def test_the_interval_matches_the_binomial_standard_error():
    """Exact match of 400 rows per seed, method right on 60% and the baseline on 50%, independently:
    the interval is near mean +- 1.96 sqrt(var/n) and resolves the 0.1 difference."""
    rng = np.random.default_rng(2)
    n, seeds = 400, 3
    method = [np.column_stack([rng.random(n) < 0.6, np.zeros((n, 4), int)]).astype(int) for _ in range(seeds)]
    baseline = [np.column_stack([rng.random(n) < 0.5, np.zeros((n, 4), int)]).astype(int) for _ in range(seeds)]
    d = paired_bootstrap(method, baseline, metrics_from_counts, ["exact_match"], resamples=2000)["exact_match"]
    observed = np.mean([m[:, 0].mean() - b[:, 0].mean() for m, b in zip(method, baseline)])
    assert d.mean == pytest.approx(observed)
    half_width = 1.96 * math.sqrt((0.6 * 0.4 + 0.5 * 0.5) / n / seeds)  # independent rows, mean of 3 seeds
    assert (d.high - d.low) / 2 == pytest.approx(half_width, rel=0.15)
    assert d.low < observed < d.high and d.resolved


def test_a_tiny_difference_is_not_resolved_and_the_draw_is_deterministic():
    refs = [["inform(name[A], rating[good])"]] * 40
    good = ["inform(name[A], rating[good])"] * 40
    one_off = good[:-1] + ["inform(name[A], rating[poor])"]
    a, b = [counts(one_off, refs)], [counts(good, refs)]
    first = paired_bootstrap(a, b, metrics_from_counts, METRICS, resamples=300, seed=5)
    assert first == paired_bootstrap(a, b, metrics_from_counts, METRICS, resamples=300, seed=5)
    assert first["exact_match"].mean == pytest.approx(-1 / 40)
    assert not first["exact_match"].resolved and first["exact_match"].low < 0


def test_unpaired_inputs_are_refused():
    a = np.zeros((5, 5), int)
    with pytest.raises(ValueError, match="same seeds"):
        paired_bootstrap([a, a], [a], metrics_from_counts, METRICS)
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap([a], [np.zeros((6, 5), int)], metrics_from_counts, METRICS)
