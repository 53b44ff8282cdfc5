"""The best checkpoint and early stopping: what a run watches at each validation, and what it decides.

``train.keep_best`` names the watched quantity: ``val_loss`` (the validation loss the loop computes) or
a metric of the dataset (its ``spec.metrics``), from generations for the first ``train.eval_limit``
unique validation prompts scored as ``eval.py`` scores (``rosa.evaluation.runner.validation_scores``);
a language-modelling dataset's perplexities (ELI5's ppl, bits_per_token) are the validation loss's.
Losses and perplexities are minimised, every other metric is maximised (``rosa.metrics.lower_is_better``).
``train.early_stop`` watches the same quantity, or ``val_loss`` when keep_best is null.

At each validation :meth:`Selection.observe` compares the value with the best so far:

* better at all (or the first value): the new best. With keep_best the loop then saves a checkpoint at
  once (it records the new best) and after it writes the adapter into ``<run>/best``
  (``rosa.runs.BEST_ADAPTER``, with ``best-record.json``: step, metric, value), atomically;
* better by more than ``min_delta``: the patience counter restarts at 0; otherwise it counts one more
  validation, and at ``patience`` the run stops early. It ends as finished ("done", exit 0) at that
  step, with :attr:`Selection.stopped` (step and reason) in status.json as ``stopped_early``; the final
  adapter is the last one and ``total_steps`` stays the planned length.

The best value, its step, the patience counter and the stop are part of every checkpoint (state.json's
``best_so_far``), so a resume continues exactly where the killed run was. As the checkpoint that records
a new best is written before ``<run>/best``, a kill between the two leaves a checkpoint of the best step
itself, and the resume writes ``<run>/best`` again from it (``Trainer.restore_best``). RoSA's restart
starts the run over: the best and the counter start afresh (:meth:`Selection.reset`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from rosa.metrics import lower_is_better

VAL_LOSS = "val_loss"
log = logging.getLogger("rosa")


@dataclass
class Selection:
    metric: str  # val_loss or a metric of the dataset
    keep_best: bool  # write <run>/best at each new best
    patience: int | None  # early stop after this many validations without an improvement (None: never)
    min_delta: float  # the least gain that counts as an improvement for the patience counter
    best_value: float | None = None
    best_step: int | None = None
    bad_validations: int = 0  # the patience counter: validations in a row without an improvement
    stopped: dict | None = None  # {"step", "reason"} once the run stopped early

    @classmethod
    def for_run(cls, train) -> Selection | None:
        """The selection ``train`` (a TrainConfig) asks for; None when neither key is set."""
        if train.keep_best is None and train.early_stop is None:
            return None
        stop = train.early_stop
        return cls(
            metric=train.keep_best or VAL_LOSS,
            keep_best=train.keep_best is not None,
            patience=stop.patience if stop else None,
            min_delta=stop.min_delta if stop else 0.0,
        )

    @property
    def minimize(self) -> bool:
        return lower_is_better(self.metric)

    def value(self, metrics: dict, spec) -> float:
        """The watched value among a validation's metrics (val_loss: its ``loss``; a metric the dataset's
        scorer could only approximate: the approximation, ``spec.metric_fallbacks``)."""
        if self.metric == VAL_LOSS:
            return metrics["loss"]
        return metrics[self.metric] if self.metric in metrics else metrics[spec.metric_fallbacks[self.metric]]

    def gain(self, value: float) -> float:
        """How much ``value`` beats the best so far (> 0: better; inf without a best; nan for nan)."""
        if self.best_value is None:
            return math.inf if not math.isnan(value) else math.nan
        return self.best_value - value if self.minimize else value - self.best_value

    def observe(self, step: int, value: float, can_stop: bool = True) -> bool:
        """Count the validation of ``step``; True when ``value`` is a new best. ``can_stop``: false at the
        run's last step, where stopping would not be early."""
        gain = self.gain(value)
        improved = gain > 0  # a nan value never improves
        if improved:
            self.best_value, self.best_step = value, step
        self.bad_validations = 0 if gain > self.min_delta else self.bad_validations + 1
        if can_stop and self.patience is not None and self.bad_validations >= self.patience:
            self.stopped = {
                "step": step,
                "reason": f"{self.metric} has not improved by more than {self.min_delta:g} in {self.patience} "
                f"validation(s) (best {self.best_value:.6g} at step {self.best_step})",
            }
        return improved

    def reset(self) -> None:
        """The run starts over (RoSA's restart): nothing before counts."""
        self.best_value, self.best_step, self.bad_validations = None, None, 0

    def state(self) -> dict:
        """For the checkpoint's state.json."""
        return {
            "metric": self.metric,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
            "stopped": self.stopped,
        }

    def load_state(self, state: dict | None) -> None:
        """A checkpoint's :meth:`state`. One that watched another quantity (the key changed between the
        runs, or a checkpoint from before the key) does not count: the selection starts afresh."""
        if not state or state.get("metric") != self.metric:
            if state:
                log.info(
                    "the checkpoint's best was by %s, this run's is by %s: starting afresh",
                    state["metric"],
                    self.metric,
                )
            return
        self.best_value, self.best_step = state["best_value"], state["best_step"]
        self.bad_validations, self.stopped = state["bad_validations"], state["stopped"]

    def record(self) -> dict:
        """What ``<run>/best/best-record.json`` and status.json say about the best."""
        return {
            "best_step": self.best_step,
            "best_metric": self.metric,
            "best_value": self.best_value,
            "best_is": "min" if self.minimize else "max",
        }
