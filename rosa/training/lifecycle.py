"""A run folder's lifecycle: skip it when finished, check before creating it, hold it, record how it ends.

:func:`train` is what ``train.py`` runs for one config: the recipe on one screen. :class:`HeldRun` owns
everything around the loop: the lock (one process per run), ``train.log``, ``config.yaml``,
``status.json`` (running, then done, failed or interrupted), the stop-signal handlers, the tracker, the
final adapter, and the mapping of outcomes to exit statuses:

* 0: done (or already done); 2: a bad setting found before the folder exists (preflight) or a folder
  that cannot be held; 1: a failure with a one-line cause (a full disk, an unreadable checkpoint, bad
  data), recorded in ``status.json``; 3: stopped by a signal after a checkpoint (handed to submitit,
  which requeues the job, when it sent the signal). Any other exception is recorded, then raised.

Every rank of a distributed job runs this; only rank 0 writes (folder, lock, logs, status, checkpoints,
adapter) and evaluates.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import IO

from rosa import atomic, distributed
from rosa.config import ConfigError, RunConfig
from rosa.data import DataError
from rosa.models import ModelSourceError, resolve_device
from rosa.provenance import code_version
from rosa.runs import FINAL_RECORD, RunLocked, lock_run, read_status, recover_status, run_dir_for, update_status
from rosa.tracking import Tracker, flat_hparams, open_tracker
from rosa.training import checkpoint as ckpt
from rosa.training import preemption
from rosa.training.loop import Trainer, peak_memory_gb
from rosa.training.preflight import PreflightError, check_same_settings

log = logging.getLogger("rosa")


def train(run: RunConfig, config_yaml: str) -> int:
    """Train (or resume, or skip) the run this config names. Returns the process exit status."""
    run_dir = run_dir_for(run)
    with StartupLog() as startup_log:  # train.log does not exist yet: its first lines wait here
        try:  # the run is built and checked before its folder exists (rosa/training/preflight.py lists the checks)
            distributed.init_from_env(resolve_device(run.device))
            status = recover_status(run_dir) if distributed.is_main() else read_status(run_dir)
            if status and status.get("state") == "done":
                if distributed.is_main():
                    print(
                        f"run {run_dir} is already done ({status.get('steps')} steps, finished {status.get('ended')}); nothing to do"
                    )
                return 0
            check_same_settings(run, run_dir)
            trainer = Trainer(run, run_dir)
        except (PreflightError, ConfigError, ModelSourceError, DataError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    held = HeldRun.hold(run_dir, status)
    if held is None:
        return 2
    with held:
        held.write_config(config_yaml, startup_log.records)
        tracker = held.start(trainer, resumed=trainer.resume())
        final = trainer.fit(tracker)
        held.finish(trainer, final)
    if held.exit_status or not (distributed.is_main() and (run.train.eval_at_end or run.eval.lm_eval)):
        return held.exit_status
    trainer = held.trainer = None  # free the training model; the run is done whatever its evaluation gives
    from rosa.evaluation.runner import evaluate_after_training

    return evaluate_after_training(run, run_dir)


class StartupLog(logging.Handler):
    """The log records of the run's start-up, kept for train.log (which exists once the folder is held)."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> StartupLog:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *_exc) -> None:
        logging.getLogger().removeHandler(self)


class HeldRun:
    """The run folder while this process trains it (see the module docstring). Use :meth:`hold`."""

    def __init__(self, run_dir: Path, status: dict | None, lock: IO | None):
        self.run_dir, self.status, self.lock = run_dir, status, lock
        self.main = distributed.is_main()
        self.trainer: Trainer | None = None
        self.tracker: Tracker | None = None
        self.log_handler: logging.Handler | None = None
        self.exit_status = 0
        self.started = time.time()
        self.startup_handlers = preemption.install_startup()  # until the loop runs, a stop ends start-up cleanly

    @classmethod
    def hold(cls, run_dir: Path, status: dict | None) -> HeldRun | None:
        """Create and lock the folder (rank 0); None (one line printed) when it cannot be created or
        another process holds it."""
        lock = _hold_run_folder(run_dir) if distributed.is_main() else None
        if distributed.is_main() and lock is None:
            return None
        return cls(run_dir, status, lock)

    def write_config(self, config_yaml: str, startup_log: list[logging.LogRecord] = ()) -> None:
        """Start train.log with the start-up's log records and write config.yaml (rank 0)."""
        if self.main:
            self.log_handler = setup_logging(self.run_dir)
            for record in startup_log:
                self.log_handler.handle(record)
            atomic.write_text(self.run_dir / "config.yaml", config_yaml)

    def start(self, trainer: Trainer, resumed: bool) -> Tracker:
        """The run is built (and resumed): status "running", the loop's signal handlers, the tracker."""
        self.trainer = trainer
        trainable = trainer.method.trainable_parameters(trainer.model)
        if self.main:
            run = trainer.run
            log.info(
                "run %s: %s on %s (%s), %d trainable parameters, %d steps",
                self.run_dir,
                trainer.method.describe(),
                run.dataset.name,
                trainer.precision["name"],
                trainable,
                trainer.total_steps,
            )
            update_status(
                self.run_dir,
                state="running",
                error=None,
                pid=os.getpid(),
                method=run.fnmodel.name,
                trained_with=_trained_with(self.status, trainer.step),
                dataset=run.dataset.name,
                model=run.model.name,
                precision=trainer.precision["name"],
                trainable_params=trainable,
                weight_memory_gb=trainer.weight_memory_gb,
                total_steps=trainer.total_steps,
                threads=trainer.threads,
                job=preemption.current_job(),
                **({} if resumed else {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}),
            )
        preemption.install(trainer, self.startup_handlers)
        self.tracker = open_tracker(trainer.run, self.run_dir, trainer.step if resumed else None, self.main)
        return self.tracker

    def finish(self, trainer: Trainer, final: dict) -> None:
        """The loop ended: the adapter with its final record, the hyperparameters, status "done"."""
        train_time = (self.status or {}).get("train_time_s", 0) + time.time() - self.started
        seconds = [h["seconds"] for h in trainer.history if "seconds" in h]
        summary = dict(
            state="done",
            ended=time.strftime("%Y-%m-%dT%H:%M:%S"),
            steps=trainer.step,
            trainable_params=trainer.method.trainable_parameters(trainer.model),
            final_val_loss=final["loss"],
            final_val_ppl=final["ppl"],
            train_time_s=train_time,
            step_time_s=sum(seconds) / len(seconds) if seconds else None,
            peak_mem_gb=peak_memory_gb(trainer.device),
            **trainer.best_status(),  # best_step, best_metric, best_value; stopped_early (step, reason)
        )
        _save_adapter(trainer, summary)
        self.tracker.hparams(
            flat_hparams(trainer.run), {"hparam/val_loss": final["loss"], "hparam/val_ppl": final["ppl"]}, trainer.step
        )
        self.tracker.close()
        if self.main:
            update_status(self.run_dir, **summary)
            best, stopped = "", summary.get("stopped_early")
            if summary.get("best_step") is not None:
                best = f", best {summary['best_metric']} {summary['best_value']:.4g} at step {summary['best_step']}"
            print(
                f"run {self.run_dir}: done in {trainer.step} steps, val loss {final['loss']:.4f}, "
                f"val ppl {final['ppl']:.2f}{best}" + (f" (stopped early: {stopped['reason']})" if stopped else "")
            )

    def __enter__(self) -> HeldRun:
        return self

    def __exit__(self, kind, err, _traceback) -> bool:
        """Record how the run ended and set ``exit_status``; release everything held."""
        if self.tracker is not None:  # after a failure or a stop too: its records flushed, its end recorded
            _close_tracker(self.tracker, ok=err is None)
        try:
            if err is None:
                return False
            if isinstance(err, (InterruptedError, preemption.StopRequested)):
                self.exit_status = 3
                if self.main:
                    note = _record_status(self.run_dir, state="interrupted", error=str(err))
                    print(f"run {self.run_dir}: {err}{note}", file=sys.stderr)
                    signum = err.signum if isinstance(err, preemption.StopRequested) else self.trainer.stop_signal
                    # under submitit: requeue now that the checkpoint is saved
                    preemption.hand_over(signum, self.startup_handlers, self.trainer.step if self.trainer else 0)
                return True
            if isinstance(err, (OSError, ckpt.CheckpointError, DataError)):  # one line: a full disk, a checkpoint, data
                self.exit_status = 1
                message = (
                    _record_failure(self.run_dir, self.trainer, err)
                    if self.main
                    else f"{type(err).__name__}: {err}".splitlines()[0]
                )
                print(f"error: run {self.run_dir} failed: {message}", file=sys.stderr)
                return True
            if isinstance(err, Exception) and self.main:  # marked failed with its error, then raised
                _record_failure(self.run_dir, self.trainer, err)
                log.error("run %s failed: %s", self.run_dir, err)
            return False
        finally:
            preemption.restore(self.startup_handlers)
            if self.log_handler is not None:
                logging.getLogger().removeHandler(self.log_handler)
                self.log_handler.close()
            if self.lock is not None:
                self.lock.close()  # releases the run


# ----------------------------------------------------------------------------- the folder's files
class _RunLogHandler(logging.FileHandler):
    """train.log. A line that cannot be written (a full disk) is dropped without the traceback
    ``logging`` would print for it: the console has the line, and the run's own error stays one line."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def setup_logging(run_dir: Path) -> logging.Handler:
    handler = _RunLogHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _trained_with(status: dict | None, step: int) -> list[dict]:
    """The run's ``trained_with`` list (``rosa.provenance``): one entry per code version that trained
    it, with the step it took over at; a resume under other code (commit or dirty files) adds one."""
    entries = list((status or {}).get("trained_with") or [])
    version = code_version()
    if not entries or {k: entries[-1].get(k) for k in version} != version:
        entries.append({**version, "from_step": step})
    return entries


def _hold_run_folder(run_dir: Path) -> IO | None:
    """Create the run folder and lock it (returns the open lock file), or print one line and return None."""
    created = next((p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()), None)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return lock_run(run_dir)
    except RunLocked as err:
        print(f"error: {err}", file=sys.stderr)
    except OSError as err:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        print(
            f"error: cannot write the run folder {run_dir}: {err.strerror or err} ({err.filename or run_dir}); "
            "allowed: an output.path this process can write",
            file=sys.stderr,
        )
    return None


def _save_adapter(trainer: Trainer, summary: dict) -> None:
    """``<run>/adapter`` with the final status record (written into ``adapter.tmp``, then renamed): a
    finished run is recognised from it even if status.json is lost. Every rank calls it (sharded
    state is gathered on rank 0); rank 0 writes."""
    record = {**(read_status(trainer.run_dir) or {}), **summary} if distributed.is_main() else {}
    trainer.write_adapter(trainer.run_dir / FINAL_RECORD.parent, FINAL_RECORD.name, record)


def _close_tracker(tracker: Tracker, ok: bool) -> None:
    """Close the tracker as the run ends; a tracker that cannot close is a warning, never the run's error."""
    try:
        tracker.close(ok)
    except Exception as err:
        log.warning("the tracker could not be closed: %s", f"{type(err).__name__}: {err}".splitlines()[0])


def _record_status(run_dir: Path, **fields) -> str:
    """update_status when the disk allows it (after a write error, it may not): never a second error.
    Returns "" or a note for the caller's one line saying that status.json could not be updated."""
    try:
        update_status(run_dir, **fields)
    except OSError as err:
        return f" (status.json not updated: {err.strerror or err})"
    return ""


def _record_failure(run_dir: Path, trainer: Trainer | None, err: BaseException) -> str:
    """Mark the run failed with the error's first line (returned, with a note if status.json could not
    be written). The steps done are kept: a run that could not resume (step 0) does not overwrite the
    count of its earlier attempt."""
    message = str(err) if isinstance(err, atomic.WriteError) else f"{type(err).__name__}: {err}".splitlines()[0]
    return message + _record_status(
        run_dir,
        state="failed",
        error=message,
        ended=time.strftime("%Y-%m-%dT%H:%M:%S"),
        **({"steps": trainer.step} if trainer and trainer.step else {}),
    )
