"""The tracker interface (:class:`Tracker`, which records nothing) and :class:`Trackers` (several as one)."""

from __future__ import annotations


class Tracker:
    """Accepts everything, records nothing (the other ranks of a distributed job; tests)."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Training's numbers at ``step`` (a step is logged once, in increasing order)."""

    def text(self, tag: str, text: str, step: int) -> None:
        pass

    def results(self, step: int, values: dict[str, float]) -> None:
        """Final numbers measured at ``step`` (the evaluation's): they replace earlier ones of the same name."""

    def hparams(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        """The run's flat hyperparameters with its final metrics (measured at ``step``)."""

    def close(self, ok: bool = True) -> None:
        """Flush and end (``ok`` False: the run failed or was interrupted); a second call does nothing."""


class Trackers(Tracker):
    """Several trackers as one: each call goes to every one of them."""

    def __init__(self, *trackers: Tracker):
        self.trackers = trackers

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.scalars(step, values)

    def text(self, tag: str, text: str, step: int) -> None:
        for tracker in self.trackers:
            tracker.text(tag, text, step)

    def results(self, step: int, values: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.results(step, values)

    def hparams(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.hparams(hparams, metrics, step)

    def close(self, ok: bool = True) -> None:
        for tracker in self.trackers:
            tracker.close(ok)
