"""Launch validated runs: here, one after another, or as submitit jobs (local processes or SLURM).

The one path of ``train.py`` (a run, or a ``-m`` sweep) and of ``jobs.yaml`` grids (``rosa.jobs``).
Every run arrives composed and validated (``rosa.config``); a job gets that validated config itself,
so nothing is composed or validated twice. ``hydra/launcher=slurm|local`` picks a preset of
``conf/hydra/launcher/`` (hydra-submitit-launcher's schema; its keys become submitit's executor
parameters as that plugin maps them: shared keys as they are, the others with the cluster's prefix).
Without one, the runs train in this process, one after another.

A job's id is known once it is submitted: ``<sweep folder>/jobs.json`` maps each run folder to its
latest job (id, cluster, log folder; rewritten atomically), and the job writes its id into the run's
``status.json`` when it starts (``rosa.training.preemption.current_job``). ``python -m rosa.jobs status``
reads those files and asks the scheduler about the ids; nothing is unpickled.

Preemption: a job is a ``submitit.helpers.Checkpointable``. On SIGUSR2 the loop checkpoints, then hands
the signal to submitit, whose ``checkpoint()`` requeues the same job: it finds its run folder and resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import submitit

from rosa import atomic
from rosa.config import RunConfig
from rosa.runs import run_dir_for

LEDGER = "jobs.json"


@dataclass
class Launcher:
    """Where a sweep's runs go: ``cluster`` None trains them here; "local" or "slurm" submits them."""

    name: str
    cluster: str | None = None
    params: dict = dataclasses.field(default_factory=dict)  # the preset's keys, resolved
    folder: Path | None = None  # the sweep folder (hydra.sweep.dir): jobs.json, submitit's files


def log_to_console() -> None:
    """The run's log lines on stderr (train.log gets them too, once the run folder is held)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("httpx", "urllib3", "torchao", "torch._dynamo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class TrainJob(submitit.helpers.Checkpointable):
    """One run as a submitit job; requeued as itself (``Checkpointable.checkpoint``)."""

    def __init__(self, run: RunConfig, config_yaml: str):
        self.run, self.config_yaml = run, config_yaml

    def __call__(self) -> int:
        return launch([(self.run, self.config_yaml)])


def launch(runs: list[tuple[RunConfig, str]], launcher: Launcher | None = None) -> int:
    """Train ``runs`` (validated, with their config.yaml) here, or submit them and wait for their jobs.
    Returns the first non-zero exit status, else 0."""
    if launcher is None or launcher.cluster is None:
        from rosa.training.lifecycle import train

        log_to_console()
        statuses = [train(run, config_yaml) for run, config_yaml in runs]
    else:
        jobs = submit(runs, launcher)
        for (run, _), job in zip(runs, jobs):
            print(f"submitted {job.job_id} {run_dir_for(run)}", file=sys.stderr)
        statuses = [_result(job) for job in jobs]
    return next((status for status in statuses if status), 0)


def submit(runs: list[tuple[RunConfig, str]], launcher: Launcher) -> list:
    """Submit one job per run (one array on SLURM) and record them in ``<folder>/jobs.json``."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = {k: v for k, v in launcher.params.items() if k != "_target_"}
    folder = params.pop("submitit_folder")
    cluster = launcher.cluster
    init = {f"{cluster}_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **init)
    shared = {f.name for f in dataclasses.fields(BaseQueueConf)}
    executor.update_parameters(**{k if k in shared else f"{cluster}_{k}": v for k, v in params.items()})
    with executor.batch():
        jobs = [executor.submit(TrainJob(run, config_yaml)) for run, config_yaml in runs]
    record_jobs(launcher.folder, {str(run_dir_for(run)): job for (run, _), job in zip(runs, jobs)}, cluster, folder)
    return jobs


def record_jobs(sweep_folder: Path, jobs: dict, cluster: str, log_folder: str) -> None:
    """Add the submitted jobs (run folder -> job) to ``jobs.json``: the latest job of each run."""
    path = Path(sweep_folder) / LEDGER
    ledger = atomic.read_json(path) if path.exists() else {}
    submitted = time.strftime("%Y-%m-%dT%H:%M:%S")
    for run_dir, job in jobs.items():
        ledger[run_dir] = {"job_id": job.job_id, "cluster": cluster, "folder": str(log_folder), "submitted": submitted}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, ledger)


def recorded_jobs(sweep_folder: Path) -> dict[str, object]:
    """Run folder -> its latest submitit job (``SlurmJob``/``LocalJob``, by id: no pickle is read)."""
    path = Path(sweep_folder) / LEDGER
    if not path.exists():
        return {}
    kinds = {"slurm": submitit.SlurmJob, "local": submitit.LocalJob}
    return {
        run_dir: kinds[entry["cluster"]](entry["folder"], entry["job_id"])
        for run_dir, entry in atomic.read_json(path).items()
    }


def _result(job) -> int:
    """A job's exit status (its train()'s), or 1 when the job itself failed."""
    try:
        return int(job.result() or 0)
    except Exception as err:  # noqa: BLE001 - submitit's failed job: its error is in the job's log
        reason = (str(err).strip().splitlines() or ["no result"])[-1]
        print(f"error: job {job.job_id} failed: {reason} (log: {job.paths.stderr})", file=sys.stderr)
        return 1
