"""Stop signals: checkpoint at the end of the current step, then hand over to the scheduler.

SLURM sends ``SIGUSR2`` (submitit's preemption / time-limit signal, ``--signal=USR2@<delay>``) and
``SIGTERM`` (``scancel``, ``scontrol requeue``, the kill at the time limit). The training loop
replaces the handlers with one that only sets ``trainer.stop_signal``; the loop then finishes the
step, saves a checkpoint and raises ``InterruptedError``. ``SIGINT`` (Ctrl-C) is handled the same way.
Before the loop runs (loading, the first status), a stop signal raises :class:`StopRequested`
instead, so a half-written file is cleaned up by its ``finally`` and the run ends as interrupted.

Under submitit, the handler we replaced for ``SIGUSR2`` is submitit's own ``checkpoint_and_try_requeue``:
it pickles the task again (``rosa.launch.TrainJob``'s ``checkpoint()`` resubmits the same run) and
requeues the job (``scontrol requeue``; the local executor exits with its requeue code). :func:`hand_over`
calls it *after* our checkpoint is on disk, so the requeued job finds the run folder, resumes from that
checkpoint and TensorBoard purges the steps after it. Outside submitit nothing is chained: the run ends
with status ``interrupted`` (exit 3) and the same command resumes it.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger("rosa")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)  # SIGINT: Ctrl-C, treated as SIGTERM


class StopRequested(BaseException):
    """A stop signal before the loop runs (start-up): raised from the handler, so ``finally`` blocks
    (an atomic write's clean-up) run and the run ends as interrupted. Not an Exception: nothing
    that catches errors swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by signal {describe(signum)} during start-up; no step was lost")


def describe(signum: int) -> str:
    return f"{signum} ({signal.Signals(signum).name})"


def _set_handlers(handler) -> dict:
    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread
            pass
    return previous


def install_startup() -> dict:
    """Until the loop takes over (:func:`install`): the first stop signal raises StopRequested.
    Returns the replaced (original) handlers."""
    raised = []

    def stop_now(signum, _frame):
        if not raised:  # a second signal while the first one's clean-up runs is ignored
            raised.append(signum)
            raise StopRequested(signum)

    return _set_handlers(stop_now)


def install(trainer, original: dict | None = None) -> dict:
    """Make the stop signals set ``trainer.stop_signal``; ``trainer.previous_signal_handlers`` holds
    the ``original`` handlers (those :func:`install_startup` replaced) or else the replaced ones."""

    def request_stop(signum, _frame):
        trainer.stop_signal = signum

    previous = _set_handlers(request_stop)
    trainer.previous_signal_handlers = original if original is not None else previous
    return trainer.previous_signal_handlers


def restore(previous: dict) -> None:
    for sig, handler in previous.items():
        try:
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        except (ValueError, TypeError):
            pass


def is_submitit_handler(handler) -> bool:
    return callable(handler) and str(getattr(handler, "__module__", "")).startswith("submitit")


def hand_over(signum: int | None, handlers: dict, step: int) -> None:
    """After the stop checkpoint: pass the signal to submitit's handler (requeue, then exit), if any.

    SIGTERM under submitit is only logged by submitit (SLURM requeues or cancels the job itself), so
    only the preemption signal is handed over. Returns normally when there is nothing to chain."""
    previous = handlers.get(signum)
    if signum is None or signum == signal.SIGTERM or not is_submitit_handler(previous):
        return
    log.info("checkpoint saved at step %d; handing signal %s to submitit (requeue)", step, signal.Signals(signum).name)
    restore(handlers)
    previous(signum, None)  # submitit: checkpoint() -> requeue -> sys.exit


def current_job() -> dict | None:
    """The submitit job this process runs in (``{"id", "cluster"}``, recorded in status.json), or None."""
    import os

    cluster = os.environ.get("SUBMITIT_EXECUTOR")
    if cluster is None:
        return None
    import submitit

    return {"id": submitit.JobEnvironment().job_id, "cluster": cluster}
