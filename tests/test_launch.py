"""``train.py -m``: every combination composed and validated once in the parent, then trained here one
after another or submitted as submitit jobs (``rosa/launch.py``) that get their validated config;
jobs.json and each run's status.json name the job by id."""

from __future__ import annotations

from rosa import atomic
from rosa.runs import read_status
from tests.conftest import run_train
from tests.training.faults import FAST

SWEEP = [*FAST, "train.max_steps=2", "seed=1,2"]


def runs_of(root):
    return sorted(p.parent for p in root.rglob("status.json"))


def test_a_sweep_trains_every_combination_here(tmp_path):
    result = run_train("-m", *SWEEP, f"output.path={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(tmp_path)
    assert [read_status(r)["state"] for r in runs] == ["done", "done"]
    assert {
        int(line.split()[1])
        for r in runs
        for line in (r / "config.yaml").read_text().splitlines()
        if line.startswith("seed:")
    } == {1, 2}
    assert not list(tmp_path.rglob("jobs.json")) and all(read_status(r)["job"] is None for r in runs)


def test_a_local_launcher_sweep_submits_jobs_recorded_by_id(tmp_path):
    from rosa.launch import recorded_jobs

    sweep = tmp_path / "sweep"
    result = run_train("-m", *SWEEP, f"output.path={tmp_path}/runs", "hydra/launcher=local", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-2000:]  # train.py waited for both jobs
    ledger = atomic.read_json(sweep / "jobs.json")
    runs = runs_of(tmp_path / "runs")
    assert sorted(ledger) == [str(r) for r in runs]
    for run in runs:
        job_id = ledger[str(run)]["job_id"]
        assert f"submitted {job_id} {run}" in result.stderr
        assert read_status(run)["state"] == "done" and read_status(run)["job"] == {"id": job_id, "cluster": "local"}
    for pickle in sweep.rglob("*.pkl"):  # the record is jobs.json alone
        pickle.unlink()
    assert {run: job.job_id for run, job in recorded_jobs(sweep).items()} == {r: e["job_id"] for r, e in ledger.items()}


def test_a_bad_combination_stops_the_sweep_before_any_job(tmp_path):
    result = run_train("-m", *FAST, "train.lr=1e-3,-1", f"output.path={tmp_path}", "hydra/launcher=local")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: train.lr=-1.0")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
