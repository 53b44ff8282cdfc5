"""The selection's decisions alone: the best value and step, the patience counter and min_delta, the
direction of each kind of metric, nan, the restart, and its state in a checkpoint."""

from __future__ import annotations

import json
import math

import pytest

from rosa.config import compose, validate
from rosa.data import get_spec
from rosa.training.selection import Selection


def selection(*overrides: str) -> Selection:
    return Selection.for_run(validate(compose(["train.eval_every=1", *overrides])).train)


def feed(sel: Selection, values: list[float]) -> list[bool]:
    return [sel.observe(step, value) for step, value in enumerate(values, start=1)]


def test_neither_key_means_no_selection():
    assert Selection.for_run(validate(compose([])).train) is None


def test_a_loss_is_minimised_and_the_best_step_kept():
    sel = selection("train.keep_best=val_loss")
    assert sel.minimize and sel.patience is None
    assert feed(sel, [3.0, 2.0, 2.5, 1.0, 1.5]) == [True, True, False, True, False]
    assert (sel.best_value, sel.best_step, sel.stopped) == (1.0, 4, None)  # no early stop without the key


def test_an_equal_value_is_no_new_best():
    sel = selection("train.keep_best=slot_f1", "dataset=viggo")
    assert feed(sel, [0.0, 0.0, 0.0]) == [True, False, False] and sel.best_step == 1  # the first stays


def test_a_task_metric_is_maximised():
    sel = selection("dataset=viggo", "train.keep_best=slot_f1")
    assert not sel.minimize
    assert feed(sel, [0.2, 0.5, 0.4]) == [True, True, False]
    assert (sel.best_value, sel.best_step) == (0.5, 2)


def test_perplexities_are_minimised():
    assert selection("dataset=eli5", "train.keep_best=ppl").minimize
    assert selection("dataset=eli5", "train.keep_best=bits_per_token").minimize
    assert not selection("dataset=eli5", "train.keep_best=rouge_l").minimize


def test_patience_counts_validations_without_an_improvement_by_more_than_min_delta():
    sel = selection("train.keep_best=val_loss", "train.early_stop={patience: 3, min_delta: 0.05}")
    # 3.98 is a new best (kept) but not an improvement by more than 0.05: the counter goes on
    assert feed(sel, [5.0, 4.0, 4.5, 3.98]) == [True, True, False, True]
    assert (sel.best_value, sel.best_step, sel.bad_validations, sel.stopped) == (3.98, 4, 2, None)
    sel.observe(5, 4.2)
    assert sel.stopped["step"] == 5 and sel.bad_validations == 3
    assert (
        "val_loss has not improved by more than 0.05 in 3 validation(s) (best 3.98 at step 4)"
        == (sel.stopped["reason"])
    )


def test_an_improvement_restarts_the_counter():
    sel = selection("train.early_stop={patience: 2, min_delta: 0.0}")
    assert sel.metric == "val_loss" and not sel.keep_best  # early stop alone watches the validation loss
    feed(sel, [3.0, 3.1, 2.0, 2.5])
    assert sel.bad_validations == 1 and sel.stopped is None


def test_the_last_step_does_not_stop_early():
    sel = selection("train.early_stop={patience: 1, min_delta: 0.0}")
    sel.observe(1, 1.0)
    sel.observe(2, 2.0, can_stop=False)
    assert sel.stopped is None and sel.bad_validations == 1


def test_nan_never_improves():
    sel = selection("train.keep_best=val_loss", "train.early_stop={patience: 2, min_delta: 0.0}")
    assert feed(sel, [math.nan, 1.0, math.nan, math.nan]) == [False, True, False, False]
    assert sel.best_value == 1.0 and sel.stopped["step"] == 4


def test_a_restart_starts_afresh():
    sel = selection("train.keep_best=val_loss", "train.early_stop={patience: 2, min_delta: 0.0}")
    feed(sel, [1.0, 2.0])
    sel.reset()
    assert (sel.best_value, sel.best_step, sel.bad_validations) == (None, None, 0)
    assert sel.observe(3, 5.0)  # worse than before the restart, but the first value after it


def test_state_round_trips_through_json_exactly():
    sel = selection("train.keep_best=val_loss", "train.early_stop={patience: 2, min_delta: 0.0}")
    feed(sel, [0.1 + 0.2, 0.5, 0.7])
    again = selection("train.keep_best=val_loss", "train.early_stop={patience: 2, min_delta: 0.0}")
    again.load_state(json.loads(json.dumps(sel.state())))
    assert again == sel and again.best_value == 0.1 + 0.2 and again.stopped["step"] == 3


def test_a_state_of_another_metric_is_not_taken():
    sel = selection("dataset=viggo", "train.keep_best=exact_match")
    sel.load_state({"metric": "val_loss", "best_value": 1.0, "best_step": 3, "bad_validations": 1, "stopped": None})
    assert (sel.best_value, sel.best_step, sel.bad_validations) == (None, None, 0)


def test_the_value_of_an_approximated_metric_is_its_fallback():
    sel = selection("train.keep_best=meteor")  # without Java, E2E's scorer reports meteor_nltk instead
    spec = get_spec("e2e")
    assert sel.value({"bleu": 0.1, "meteor_nltk": 0.3}, spec) == 0.3
    assert sel.value({"bleu": 0.1, "meteor": 0.4}, spec) == 0.4
    assert selection("train.keep_best=val_loss").value({"loss": 2.0, "ppl": 7.4}, spec) == 2.0
    with pytest.raises(KeyError):
        sel.value({"bleu": 0.1}, spec)
