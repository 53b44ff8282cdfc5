"""Stop signals: checkpoint at the end of the current step, then hand over to the scheduler.

SLURM sends ``SIGUSR2`` (submitit's preemption / time-limit signal, ``--signal=USR2@<delay>``) and
``SIGTERM`` (``scancel``, ``scontrol requeue``, the kill at the time limit). The training loop
replaces the handlers with one that only sets ``trainer.stop_signal``; the loop then finishes the
step, saves a checkpoint and raises ``InterruptedError``.

Under submitit, the handler we replaced for ``SIGUSR2`` is submitit's own ``checkpoint_and_try_requeue``:
it pickles the task again (hydra-submitit-launcher's ``checkpoint()`` resubmits the same overrides) and
requeues the job (``scontrol requeue``; the local executor exits with its requeue code). :func:`hand_over`
calls it *after* our checkpoint is on disk, so the requeued job finds the run folder, resumes from that
checkpoint and TensorBoard purges the steps after it. Outside submitit nothing is chained: the run ends
with status ``interrupted`` (exit 3) and the same command resumes it.
"""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("rosa")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


def install(trainer) -> dict:
    """Make the stop signals set ``trainer.stop_signal``; return the replaced handlers."""
    def request_stop(signum, _frame):
        trainer.stop_signal = signum

    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not in the main thread
            pass
    trainer.previous_signal_handlers = previous
    return previous


TEST_SIGNAL_ENV = "ROSA_TEST_SIGNAL_AT_STEP"


def test_signal(point: int | str) -> None:
    """Test hook: ``ROSA_TEST_SIGNAL_AT_STEP=N:SIGNAME[,M:SIGNAME]`` makes the run send itself SIGNAME
    when it reaches ``point`` N (a step number: the end of that step, before its checkpoint). Tests
    stop a run at a chosen step this way, with no timing involved. ``raise_signal`` runs a Python
    handler before it returns, so the signal has been handled when this returns."""
    spec = os.environ.get(TEST_SIGNAL_ENV)
    if not spec:
        return
    for item in spec.split(","):
        at, _, name = item.partition(":")
        if at.strip() == str(point):
            signal.raise_signal(signal.Signals[name.strip()])


def restore(previous: dict) -> None:
    for sig, handler in previous.items():
        try:
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        except (ValueError, TypeError):
            pass


def is_submitit_handler(handler) -> bool:
    return callable(handler) and str(getattr(handler, "__module__", "")).startswith("submitit")


def hand_over(trainer) -> None:
    """After the stop checkpoint: pass the signal to submitit's handler (requeue, then exit), if any.

    SIGTERM under submitit is only logged by submitit (SLURM requeues or cancels the job itself), so
    only the preemption signal is handed over. Returns normally when there is nothing to chain."""
    signum = getattr(trainer, "stop_signal", None)
    previous = getattr(trainer, "previous_signal_handlers", {}).get(signum)
    if signum is None or signum == signal.SIGTERM or not is_submitit_handler(previous):
        return
    log.info("checkpoint saved at step %d; handing signal %s to submitit (requeue)", trainer.step,
             signal.Signals(signum).name)
    restore(trainer.previous_signal_handlers)
    previous(signum, None)  # submitit: checkpoint() -> requeue -> sys.exit
