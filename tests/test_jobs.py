"""jobs.yaml grids, `python -m rosa.jobs`, and checkpoint-and-requeue under submitit (local launcher)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from rosa import jobs
from rosa.runs import update_status

SMOKE = ["model=tiny", "train.max_steps=2", "train.eval_at_end=false", "train.sample_at_eval=false"]


def test_every_grid_composes_and_validates():
    grids = jobs.load_grids()
    assert {"smoke", "rosa-bf16", "rosa-4bit", "rosa-e2e", "rosa-eli5"} <= set(grids)
    for name in grids:
        entries = jobs.resolve(jobs.get_grid(name), ["output.path=/nonexistent/runs"])
        assert entries, name
        assert not [e for e in entries if e.error], [(e.overrides, e.error) for e in entries if e.error]
        dirs = [e.run_dir for e in entries]
        assert len(set(dirs)) == len(dirs), f"{name}: two runs share a folder"


def test_grid_sizes():
    assert len(jobs.get_grid("rosa-bf16").runs) == 45  # 3 datasets x (9 RoSA + 3 LoRA + 3 SpA)
    assert len(jobs.get_grid("rosa-e2e").runs) == 27  # 3 models x (4 ROSA + 4 LoRA + FT)


def _grid(tmp_path: Path) -> jobs.Grid:
    return jobs.Grid("t", "", {}, [SMOKE + ["fnmodel=lora"], SMOKE + ["fnmodel=fft"], SMOKE + ["dataset=viggo"]])


def test_submit_skips_done_and_failed(tmp_path, capsys):
    grid = _grid(tmp_path)
    extra = [f"output.path={tmp_path}/runs"]
    done, failed, fresh = jobs.resolve(grid, extra)
    for e in (done, failed):
        e.run_dir.mkdir(parents=True)
    update_status(done.run_dir, state="done", steps=2)
    update_status(failed.run_dir, state="failed", error="RuntimeError: boom\nmore")
    assert jobs.submit(grid, "local", dry_run=True, retry_failed=False, extra=extra) == 0
    out = capsys.readouterr().out
    assert "3 runs, 1 to submit" in out and f"would submit {fresh.run_dir}" in out
    assert jobs.submit(grid, "local", dry_run=True, retry_failed=True, extra=extra) == 0
    assert "3 runs, 2 to submit" in capsys.readouterr().out
    jobs.print_status(grid, extra)
    out = capsys.readouterr().out
    assert "done" in out and "RuntimeError: boom" in out and "more" not in out and "not submitted" in out


def test_bad_override_in_grid_exits_2(tmp_path, capsys):
    grid = jobs.Grid("bad", "", {}, [SMOKE + ["train.lrr=1"]])
    assert jobs.submit(grid, "local", True, False, [f"output.path={tmp_path}"]) == 2
    assert "train.lrr" in capsys.readouterr().err


def test_cli_list_and_unknown_grid(capsys):
    assert jobs.main(["list"]) == 0
    assert "smoke" in capsys.readouterr().out
    assert jobs.main(["status", "nope"]) == 2
    assert "grid 'nope'" in capsys.readouterr().err


def test_preemption_checkpoints_requeues_and_resumes(tmp_path, monkeypatch):
    """USR2 (submitit's preemption signal) mid-run of a job that `submit` sent through the local launcher
    preset: the loop saves a checkpoint at the end of the step, then hands the signal to submitit, which
    requeues the task (rosa.launch.TrainJob's checkpoint(): the same run); the requeued task resumes from
    that checkpoint and finishes, without duplicated TensorBoard steps. The task sends itself USR2 at the
    end of step 20 (ROSA_TEST_SIGNAL_AT_STEP, inherited by the job), so nothing depends on timing."""
    from rosa.runs import read_status

    steps = 24
    overrides = [
        "model=tiny",
        f"train.max_steps={steps}",
        "train.checkpoint_every=1000",
        "train.eval_at_end=false",
        "train.sample_at_eval=false",
        "train.batch_size=2",
        "train.micro_batch_size=2",
        "threads=1",
        "dataset.sample_rows.train=16",
        "dataset.sample_rows.validation=4",
        "train.eval_batches=1",
        f"output.path={tmp_path}/runs",
        "device=cpu",
    ]
    grid = jobs.Grid("p", "", {"timeout_min": 15, "gpus_per_node": 0}, [overrides])
    (entry,) = jobs.resolve(grid)
    monkeypatch.setenv("ROSA_TEST_SIGNAL_AT_STEP", "20:SIGUSR2")
    # submitted through the local launcher preset: a background process per job
    assert jobs.submit(grid, "local", dry_run=False, retry_failed=False, extra=[]) == 0
    (job,) = jobs.submitted([entry], jobs.sweep_dir(tmp_path / "runs", "p")).values()  # jobs.json, by id
    deadline = time.time() + 600
    while job.state != "FINISHED" and time.time() < deadline:  # submitit: the result file is written
        time.sleep(1)
    assert job.result() == 0  # the job's train() returned exit status 0
    status = read_status(entry.run_dir)
    assert status["state"] == "done" and status["steps"] == steps
    assert status["job"] == {"id": job.job_id, "cluster": "local"}  # the job that trained it
    log = (entry.run_dir / "train.log").read_text()
    assert "handing signal SIGUSR2 to submitit" in log
    resumed = [line for line in log.splitlines() if "resumed from" in line]
    assert len(resumed) == 1 and "step 0," not in resumed[0], resumed
    stopped_at = int(resumed[0].split("(step ")[1].split(",")[0])
    assert stopped_at == 20
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(entry.run_dir)).Reload()
    loss_steps = [e.step for e in events.Scalars("train/loss")]
    assert sorted(set(loss_steps)) == list(range(1, steps + 1))


# ----------------------------------------------------------------------------- a grid with committed results
def _results_grid(tmp_path: Path) -> jobs.Grid:
    return jobs.Grid("t", "", {}, [SMOKE + ["fnmodel=lora"], SMOKE + ["fnmodel=fft"]], results=tmp_path / "results")


def test_a_results_grid_reruns_a_cell_when_the_code_or_the_config_changes(tmp_path, monkeypatch, capsys):
    """A cell committed by this code is skipped; another code fingerprint or another config reruns it
    (in a run folder of its own); a checkout with uncommitted result code is refused."""
    from rosa.config import ConfigError
    from tests.results.test_committed import finished_run

    version = {"commit": "a" * 40, "dirty": [], "code": "f1"}
    monkeypatch.setattr("rosa.provenance.code_version", lambda: version)
    grid, extra = _results_grid(tmp_path), [f"output.path={tmp_path}/runs"]
    first, second = jobs.resolve_committed(grid, extra)[0]
    assert first.run_dir.parts[-4] == "code-f1" and first.split == "test"
    assert jobs.submit(grid, "serial", dry_run=True, retry_failed=False, extra=extra) == 0
    assert "2 runs, 2 to submit" in capsys.readouterr().out

    finished_run(first.run_dir, version, split="test")  # finished here: committed, then skipped
    assert jobs.submit(grid, "serial", dry_run=True, retry_failed=False, extra=extra) == 0
    assert "would commit it" in capsys.readouterr().out and not (tmp_path / "results").exists()
    assert jobs.collect(grid, extra) == 0
    cell = tmp_path / "results" / first.run_dir.relative_to(tmp_path / "runs" / "code-f1")
    assert f"committed {cell}" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "runs")  # a new machine: only the committed cell
    assert jobs.submit(grid, "serial", dry_run=True, retry_failed=False, extra=extra) == 0
    out = capsys.readouterr().out
    assert f"skip  committed {cell}" in out and "2 runs, 1 to submit" in out and f"would submit {second.run_dir}" in out
    jobs.print_status(grid, extra)
    assert "committed" in capsys.readouterr().out

    version["commit"] = "b" * 40  # a commit of results or docs: still current
    assert jobs.submit(grid, "serial", dry_run=True, retry_failed=False, extra=extra) == 0
    assert "2 runs, 1 to submit" in capsys.readouterr().out
    version["code"] = "f2"  # other code: both rerun, in code-f2/
    assert jobs.submit(grid, "serial", dry_run=True, retry_failed=False, extra=extra) == 0
    out = capsys.readouterr().out
    assert "2 runs, 2 to submit" in out and "code-f2" in out
    version["code"] = "f1"  # another config: another cell
    assert jobs.submit(grid, "serial", dry_run=True, retry_failed=False, extra=[*extra, "train.lr=1e-3"]) == 0
    assert "2 runs, 2 to submit" in capsys.readouterr().out
    version["dirty"] = ["rosa/methods/lora.py"]
    with pytest.raises(ConfigError, match="rosa/methods/lora.py differ from commit bbbbbbb"):
        jobs.submit(grid, "serial", dry_run=True, retry_failed=False, extra=extra)


def test_a_results_grid_commits_each_cell_as_it_finishes(tmp_path, capsys):
    """The serial launcher trains a cell (a real child train.py), commits it, and skips it next time."""
    from rosa.provenance import changed_result_code, code_version

    version = code_version()
    if not version["code"] or changed_result_code(version):
        pytest.skip(f"needs a checkout whose result code is committed (changed: {changed_result_code(version)})")
    grid = jobs.Grid(
        "t",
        "",
        {},
        [
            SMOKE
            + ["train.eval_at_end=true", "eval.limit=2", "dataset.sample_rows.test=2", "dataset.sample_rows.train=16"]
        ],
        results=tmp_path / "results",
    )
    extra = [f"output.path={tmp_path}/runs"]
    assert jobs.submit(grid, "serial", dry_run=False, retry_failed=False, extra=extra) == 0
    assert "[1/1] committed" in capsys.readouterr().out
    cells = [p.parent for p in (tmp_path / "results").rglob("status.json")]
    assert len(cells) == 1 and (cells[0] / "metrics-test.json").exists()
    assert jobs.submit(grid, "serial", dry_run=False, retry_failed=False, extra=extra) == 0
    assert "skip  committed" in capsys.readouterr().out
