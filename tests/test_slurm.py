"""The SLURM path on a real (one-node) cluster: ci/slurm/setup.sh starts one; .ci/run does it in CI.

Skipped where SLURM is absent; under CI=true its absence is a failure. The jobs run with this
interpreter from the repository root, so the node must see this checkout (one machine: it does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from rosa import jobs
from rosa.runs import read_status

ROOT = Path(__file__).resolve().parent.parent


def _cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout
    return any(s in out for s in ("idle", "mix", "alloc", "completing"))


if not _cluster_up():
    if os.environ.get("CI") == "true":
        pytest.fail(
            "CI=true but no SLURM cluster answers sinfo: .ci/run should have started one (ci/slurm/setup.sh)",
            pytrace=False,
        )
    pytest.skip(
        "no SLURM cluster (sinfo missing or no idle node); start one with sudo ci/slurm/setup.sh",
        allow_module_level=True,
    )

FAST = [
    "model=tiny",
    "train.eval_at_end=false",
    "train.sample_at_eval=false",
    "train.batch_size=2",
    "train.micro_batch_size=2",
    "dataset.sample_rows.validation=4",
    "device=cpu",
]
RESOURCES = {
    "timeout_min": 20,
    "gpus_per_node": 0,
    "cpus_per_task": 1,
    "mem_gb": 2,
    "signal_delay_s": 30,
    "array_parallelism": 4,
}  # on top of conf/hydra/launcher/slurm.yaml (1 GPU by default)


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory):
    """Submit, once: a run to requeue and a run to cancel (long enough to catch); the smoke grid is
    submitted by its own test, last, so its jobs do not hold the node's CPUs while the requeued run
    waits for one. The cancel test runs first: the endless run would otherwise hold a CPU. Both
    "long" runs stop themselves (SIGSTOP) at the end of step 6, after step 5's checkpoint and only in
    their first attempt: each is still running when the test requeues or cancels it, however fast
    the machine (the requeued run is not stopped again and finishes)."""
    tmp = tmp_path_factory.mktemp("slurm")
    runs = tmp / "runs"
    grids = {
        "grids": {
            "long": {
                "slurm": RESOURCES,
                "runs": [
                    " ".join(FAST + ["train.max_steps=12", "train.checkpoint_every=5", "seed=1"]),  # requeued
                    " ".join(FAST + ["train.max_steps=100000", "train.checkpoint_every=50", "seed=2"]),  # cancelled
                ],
            }
        }
    }
    grids["grids"]["smoke"] = jobs.load_grids()["smoke"]
    path = tmp / "jobs.yaml"
    path.write_text(yaml.safe_dump(grids))
    extra = [f"output.path={runs}"]
    os.environ["ROSA_TEST_SIGNAL_AT_STEP"] = "6:SIGSTOP:first"  # sbatch passes the environment on
    try:
        _submit(path, "long", extra)
    finally:
        del os.environ["ROSA_TEST_SIGNAL_AT_STEP"]
    return path, extra, runs


def _submit(path, grid: str, extra: list[str]) -> None:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert jobs.submit(jobs.get_grid(grid, path), "slurm", False, False, extra) == 0
    finally:
        os.chdir(cwd)


def _wait(predicate, timeout: float, what: str, every: float = 2.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def _rows(path, extra, grid):
    entries = jobs.resolve(jobs.get_grid(grid, path), extra)
    return jobs.statuses(entries, jobs.submitted(entries, jobs.sweep_dir(jobs.runs_root(entries), grid)))


def _squeue_has(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout.split()
    return job_id in out


def test_cancelled_job_is_reported_failed(cluster_runs, capsys):
    path, extra, _ = cluster_runs
    entry, _, _, job = _rows(path, extra, "long")[1]
    _wait(lambda: (read_status(entry.run_dir) or {}).get("state") == "running", 420, "the run to start")
    subprocess.run(["scancel", job.job_id], check=True)
    _wait(lambda: not _squeue_has(job.job_id), 120, "the cancelled job to leave the queue")
    rows = {str(e.run_dir): (state, detail) for e, state, detail, _ in _rows(path, extra, "long")}
    state, detail = rows[str(entry.run_dir)]
    assert state == "failed" and "CANCELLED" in detail, (state, detail)
    jobs.print_status(jobs.get_grid("long", path), extra)
    assert "CANCELLED" in capsys.readouterr().out


def test_requeue_resumes_from_checkpoint(cluster_runs):
    path, extra, _ = cluster_runs
    entry, _, _, job = _rows(path, extra, "long")[0]
    _wait(lambda: (entry.run_dir / "checkpoints" / "latest.json").exists(), 420, "the first checkpoint")
    assert (read_status(entry.run_dir) or {}).get("state") == "running"  # held at step 6 (SIGSTOP)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)

    # SLURM holds a requeued job back for a while (its begin time is pushed ~2 minutes ahead);
    # make it eligible now so the test waits for the resume, not for the hold.
    def held_back() -> bool:
        shown = subprocess.run(["scontrol", "show", "job", job.job_id], capture_output=True, text=True).stdout
        return "JobState=PENDING" in shown and "Reason=BeginTime" in shown

    _wait(held_back, 60, "the requeued job to be pending on its begin time")
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"], check=True)
    _wait(lambda: (read_status(entry.run_dir) or {}).get("state") in ("done", "failed"), 600, "the requeued run")
    status = read_status(entry.run_dir)
    assert status["state"] == "done", status
    assert status["job"] == {"id": job.job_id, "cluster": "slurm"}  # the job (jobs.json's id) wrote it
    log = (entry.run_dir / "train.log").read_text()
    resumed = [line for line in log.splitlines() if "resumed from" in line]
    assert resumed and "(step 0," not in resumed[0], log[-2000:]


def test_smoke_grid_finishes_and_resubmit_is_a_no_op(cluster_runs, capsys):
    path, extra, runs = cluster_runs
    _submit(path, "smoke", extra)

    def finished_and_evaluated(row) -> bool:  # a run is "done" before its end-of-training evaluation
        entry, state, _, _ = row
        return state == "failed" or (state == "done" and any(entry.run_dir.glob("metrics-*.json")))

    _wait(lambda: all(finished_and_evaluated(r) for r in _rows(path, extra, "smoke")), 540, "the smoke grid")
    rows = _rows(path, extra, "smoke")
    assert all(state == "done" for _, state, _, _ in rows), [(str(e.run_dir), s, d) for e, s, d, _ in rows]
    capsys.readouterr()
    assert jobs.submit(jobs.get_grid("smoke", path), "slurm", False, False, extra) == 0
    assert "0 to submit" in capsys.readouterr().out
