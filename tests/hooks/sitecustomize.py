"""Test hook, outside the package: stop a training process at a chosen step, with no timing involved.

``ROSA_TEST_SIGNAL_AT_STEP=N:SIGNAME[,M:SIGNAME]`` makes a run send itself SIGNAME at the end of step N
(after the step, before its validation and checkpoint). ``N:SIGNAME:first`` signals only in a SLURM
job's first attempt (not after a requeue): e.g. SIGSTOP holds a run "running" until the test requeues
it, and the requeued run goes on. ``raise_signal`` runs a Python handler before it returns, so the
signal has been handled when the step goes on.

tests/conftest.py puts this folder on PYTHONPATH, so every Python process the tests start (train.py,
a Hydra or submitit job) imports this file at start-up; it patches ``rosa.training.loop.Trainer`` when
that module is imported, and only when the variable is set.
"""

import importlib.abc
import importlib.util
import os
import signal
import sys

ENV = "ROSA_TEST_SIGNAL_AT_STEP"


def _signal_at(step: int) -> None:
    requeued = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    for item in os.environ.get(ENV, "").split(","):
        at, name, *when = (part.strip() for part in item.split(":"))
        if at == str(step) and not (when == ["first"] and requeued):
            signal.raise_signal(signal.Signals[name])


def _patch(loop) -> None:
    """After each ``train_step`` the loop counts the step and calls ``handle`` (the method's
    after-step request): signal there, once per step."""
    trainer = loop.Trainer
    train_step, handle = trainer.train_step, trainer.handle

    def stepped(self):
        stats = train_step(self)
        self._test_step_ended = True
        return stats

    def handled(self, request):
        handle(self, request)
        if getattr(self, "_test_step_ended", False):
            self._test_step_ended = False
            _signal_at(self.step)

    trainer.train_step, trainer.handle = stepped, handled


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "rosa.training.loop":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get(ENV):
    sys.meta_path.insert(0, _PatchOnImport())
