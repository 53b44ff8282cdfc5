"""Named experiment grids (``jobs.yaml``): submit the runs not done yet, report where each one stands.

    python -m rosa.jobs list
    python -m rosa.jobs submit <grid> [--launcher slurm|local|serial] [--dry-run] [--retry-failed] [--set KEY=VALUE ...]
    python -m rosa.jobs status <grid> [--set KEY=VALUE ...]

Each run of a grid is a list of train.py overrides. Its folder comes from the composed config
(``rosa.config.compose`` + ``validate`` + ``rosa.runs.run_dir_for``), the same folder
``train.py`` would use, so ``submit`` can skip finished runs and a grid can be resubmitted at any time.

``--launcher serial`` runs the runs one after another in this terminal (``train.py`` in a child
process each, output shown), the right choice for a small machine: a kill stops the grid, and the
same command resumes it (finished runs are skipped, an unfinished one resumes from its checkpoint).

``submit`` sends one submitit job array per grid (SLURM: ``sbatch --array``; local: processes), each
task running :class:`TrainTask`. A task is checkpointable: on the preemption / time-limit signal the
training loop saves a checkpoint, then submitit requeues the task, which resumes from it. Submissions
are recorded in ``<output.path>/.jobs/<grid>.json`` (run folder -> job id, log files); ``status`` joins
that record with the run folders' ``status.json`` and, where SLURM is present, ``squeue`` /
``scontrol show job`` (and ``sacct`` when accounting is enabled).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rosa import atomic
from rosa.config import CONF_DIR, ConfigError, compose, expand_sweeps, rewrite_overrides, validate

JOBS_FILE = CONF_DIR.parent / "jobs.yaml"
ALIVE = {"PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending",
         "REQUEUE_FED": "pending", "RESIZING": "running", "RUNNING": "running", "COMPLETING": "running",
         "SUSPENDED": "pending", "STOPPED": "pending", "SIGNALING": "running", "STAGE_OUT": "running"}


# ----------------------------------------------------------------------------- grids
@dataclass
class Entry:
    overrides: list[str]
    run_dir: Path
    error: str | None = None


@dataclass
class Grid:
    name: str
    description: str
    slurm: dict
    runs: list[list[str]] = field(default_factory=list)


def load_grids(path: Path = JOBS_FILE) -> dict:
    data = yaml.safe_load(Path(path).read_text()) or {}
    return data.get("grids", {})


def get_grid(name: str, path: Path = JOBS_FILE) -> Grid:
    grids = load_grids(path)
    if name not in grids:
        raise ConfigError(f"grid {name!r} is not in {path}; choose one of: {', '.join(grids)}")
    spec = grids[name]
    common = _split(spec.get("common", []))
    runs = []
    for line in spec.get("runs", []):
        for combo in expand_sweeps(_expand_globs(common + _split(line)), limit=100_000):
            runs.append(rewrite_overrides(combo))
    return Grid(name, spec.get("description", ""), dict(spec.get("slurm") or {}), runs)


def _split(item) -> list[str]:
    if isinstance(item, list):
        return [str(x) for x in item]
    return str(item).split()


def _expand_globs(overrides: list[str]) -> list[str]:
    """``+experiment=rosa-paper/e2e-*`` -> a comma list of the matching preset files."""
    out = []
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "experiment" and "*" in value:
            names = sorted(str(p.relative_to(CONF_DIR / "experiment").with_suffix(""))
                           for p in (CONF_DIR / "experiment").glob(value + ".yaml"))
            if not names:
                raise ConfigError(f"{arg}: no preset in conf/experiment matches")
            arg = f"{key}={','.join(names)}"
        out.append(arg)
    return out


def resolve(grid: Grid, extra: list[str] = ()) -> list[Entry]:
    """Compose and validate every run; its run folder (or the one-line error)."""
    from rosa.runs import run_dir_for

    entries = []
    for overrides in grid.runs:
        overrides = overrides + list(extra)
        try:
            run = validate(compose(overrides))
            entries.append(Entry(overrides, run_dir_for(run)))
        except ConfigError as err:
            entries.append(Entry(overrides, Path("?"), error=str(err)))
    return entries


# ----------------------------------------------------------------------------- the task
class TrainTask:
    """One run, as a submitit job: compose, validate, train (or resume, or skip when done)."""

    def __init__(self, overrides: list[str]):
        self.overrides = list(overrides)

    def __call__(self) -> int:
        import logging

        from omegaconf import OmegaConf

        from rosa.training.loop import train

        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
        os.environ.setdefault("TQDM_DISABLE", "1")
        cfg = compose(self.overrides)
        return train(validate(cfg), OmegaConf.to_yaml(cfg, resolve=True))

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption / time limit (after the loop saved its checkpoint):
        resubmit the same overrides; the requeued task resumes from the run's latest checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(self.overrides))

    def __repr__(self) -> str:
        return f"TrainTask({' '.join(self.overrides)})"


# ----------------------------------------------------------------------------- ledger
def ledger_path(runs_root: Path, grid: str) -> Path:
    return Path(runs_root) / ".jobs" / f"{grid}.json"


def read_ledger(path: Path) -> dict:
    return atomic.read_json(path) if path.exists() else {}


def runs_root(entries: list[Entry]) -> Path:
    for e in entries:
        if e.error is None:
            return e.run_dir.parent.parent.parent
    return Path("runs")


# ----------------------------------------------------------------------------- scheduler state
def have_slurm() -> bool:
    return shutil.which("squeue") is not None and shutil.which("sbatch") is not None


def slurm_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """job id -> (SLURM state, reason) from squeue, then scontrol / sacct for finished jobs."""
    states: dict[str, tuple[str, str]] = {}
    if not job_ids or not have_slurm():
        return states
    out = _run(["squeue", "-h", "-a", "-r", "-o", "%i|%T|%r"])
    for line in out.splitlines():
        jid, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        states[jid.strip()] = (state.strip(), reason.strip())
    for jid in job_ids:
        if jid in states:
            continue
        text = _run(["scontrol", "-o", "show", "job", jid])
        fields = dict(tok.split("=", 1) for tok in text.split() if "=" in tok)
        if "JobState" in fields:
            states[jid] = (fields["JobState"], fields.get("Reason", ""))
            continue
        acct = _run(["sacct", "-n", "-P", "-X", "-j", jid, "-o", "State"]).split()
        if acct:
            states[jid] = (acct[0].split()[0], "")
    return states


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (ValueError, OSError):
        return False


def run_state(entry: Entry, job: dict | None, slurm: dict) -> tuple[str, str]:
    """(pending|running|done|failed|not submitted, detail) for one run."""
    from rosa.runs import read_status

    if entry.error:
        return "failed", f"config: {entry.error}"
    status = read_status(entry.run_dir) or {}
    if status.get("state") == "done":
        return "done", ""
    if job:
        jid = str(job["job_id"])
        if job.get("launcher") == "slurm":
            state, reason = slurm.get(jid, ("", ""))
            if state in ALIVE:
                detail = f"resuming from step {status.get('steps')}" if status.get("steps") and ALIVE[state] == "pending" else ""
                return ALIVE[state], detail or (reason if reason not in ("None", "") else "")
            if state and state != "COMPLETED":
                return "failed", f"SLURM {state}" + (f" ({reason})" if reason not in ("None", "") else "") + (
                    f"; {status['error']}" if status.get("error") else "")
        elif _pid_alive(jid.split("_")[0]):
            return "running" if status.get("state") == "running" else "pending", ""
    if status.get("state") == "failed":
        return "failed", (status.get("error") or "").splitlines()[0] if status.get("error") else ""
    if status.get("state") in ("running", "interrupted"):
        return "failed", f"stopped at step {status.get('steps', 0)} ({status.get('state')}: " \
                         f"{(status.get('error') or 'no job alive').splitlines()[0]}); resubmit to resume"
    if job:
        return "failed", "the job ended before the run started; see its log"
    return "not submitted", ""


def statuses(entries: list[Entry], ledger: dict) -> list[tuple[Entry, str, str, dict | None]]:
    jobs = [str(ledger[str(e.run_dir)]["job_id"]) for e in entries if str(e.run_dir) in ledger
            and ledger[str(e.run_dir)].get("launcher") == "slurm"]
    slurm = slurm_states(jobs)
    rows = []
    for e in entries:
        job = ledger.get(str(e.run_dir))
        state, detail = run_state(e, job, slurm)
        rows.append((e, state, detail, job))
    return rows


# ----------------------------------------------------------------------------- commands
def submit(grid: Grid, launcher: str, dry_run: bool, retry_failed: bool, extra: list[str], out=None) -> int:
    out = out or sys.stdout
    entries = resolve(grid, extra)
    bad = [e for e in entries if e.error]
    for e in bad:
        print(f"error: {' '.join(e.overrides)}: {e.error}", file=sys.stderr)
    if bad:
        return 2
    root = runs_root(entries)
    ledger_file = ledger_path(root, grid.name)
    ledger = read_ledger(ledger_file)
    todo, seen = [], set()
    for e, state, detail, _ in statuses(entries, ledger):
        if str(e.run_dir) in seen:
            continue
        seen.add(str(e.run_dir))
        if state in ("done", "pending", "running") or (state == "failed" and not retry_failed
                                                          and (e.run_dir / "status.json").exists()
                                                          and _status_failed(e.run_dir)):
            print(f"skip  {state:8s} {e.run_dir}", file=out)
            continue
        todo.append(e)
    print(f"grid {grid.name}: {len(entries)} runs, {len(todo)} to submit ({launcher})", file=out)
    if dry_run or not todo:
        for e in todo:
            print(f"would submit {e.run_dir}: {' '.join(e.overrides)}", file=out)
        return 0
    if launcher == "slurm" and not have_slurm():
        print("error: --launcher slurm but sbatch/squeue are not on PATH", file=sys.stderr)
        return 2
    if launcher == "serial":
        return run_serially(todo, out)
    import submitit

    folder = root / ".jobs" / grid.name / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=launcher,
                                     **({"slurm_max_num_timeout": int(grid.slurm.get("max_num_timeout", 20))}
                                        if launcher == "slurm" else {}))
    executor.update_parameters(**_executor_params(grid, launcher))
    with executor.batch():  # one job array on SLURM
        pending = [executor.submit(TrainTask(e.overrides)) for e in todo]
    jobs = list(pending)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    for e, job in zip(todo, jobs):
        ledger[str(e.run_dir)] = {"job_id": str(job.job_id), "launcher": launcher, "submitted": now,
                                  "overrides": e.overrides, "stdout": str(job.paths.stdout),
                                  "stderr": str(job.paths.stderr)}
        print(f"submitted {job.job_id} {e.run_dir}", file=out)
    ledger_file.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(ledger_file, ledger)
    if launcher == "local":
        _LOCAL_JOBS.extend(jobs)  # keep the handles alive (tests wait on them)
    return 0


_LOCAL_JOBS: list = []


def run_serially(todo: list[Entry], out) -> int:
    """Each run in a child ``train.py`` process, one at a time; the exit status of the first failure."""
    failures = []
    for i, e in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {e.run_dir}: python train.py {' '.join(e.overrides)}", file=out, flush=True)
        status = subprocess.call([sys.executable, str(CONF_DIR.parent / "train.py"), *e.overrides])
        if status:
            failures.append((e, status))
            print(f"[{i}/{len(todo)}] exit status {status}: {e.run_dir}", file=out, flush=True)
    for e, status in failures:
        print(f"failed ({status}): {e.run_dir}", file=sys.stderr)
    return failures[0][1] if failures else 0


def _status_failed(run_dir: Path) -> bool:
    from rosa.runs import read_status

    return (read_status(run_dir) or {}).get("state") == "failed"


def _executor_params(grid: Grid, launcher: str) -> dict:
    params = dict(grid.slurm)
    params.pop("max_num_timeout", None)
    params.setdefault("name", f"rosa-{grid.name}")
    common = {"timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "nodes", "tasks_per_node", "name"}
    if launcher == "local":
        keep = {k: v for k, v in params.items() if k in common}
        keep["gpus_per_node"] = keep.get("gpus_per_node") or 0
        if "signal_delay_s" in params:
            keep["local_signal_delay_s"] = params["signal_delay_s"]
        keep.pop("mem_gb", None)
        keep.pop("cpus_per_task", None)
        return keep
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key if key in common else f"slurm_{key}"] = value
    if not out.get("gpus_per_node"):
        out.pop("gpus_per_node", None)
    return out


def print_status(grid: Grid, extra: list[str], out=None) -> int:
    out = out or sys.stdout
    entries = resolve(grid, extra)
    ledger = read_ledger(ledger_path(runs_root(entries), grid.name))
    counts: dict[str, int] = {}
    print(f"{'state':13s} {'job':>10s}  run  [detail]  logs", file=out)
    for e, state, detail, job in statuses(entries, ledger):
        counts[state] = counts.get(state, 0) + 1
        logs = job.get("stdout", "") if job else ""
        if not logs and (e.run_dir / "train.log").exists():
            logs = str(e.run_dir / "train.log")
        jid = job["job_id"] if job else "-"
        print(f"{state:13s} {jid:>10s}  {e.run_dir}" + (f"  [{detail}]" if detail else "") + (f"  {logs}" if logs else ""),
              file=out)
    print("total: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rosa.jobs", description=__doc__.split("\n")[0])
    parser.add_argument("--file", default=str(JOBS_FILE), help="the grids file (default: jobs.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the grids and their run counts")
    for name in ("submit", "status"):
        p = sub.add_parser(name)
        p.add_argument("grid")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="an override added to every run (e.g. output.path=/scratch/runs)")
        if name == "submit":
            p.add_argument("--launcher", choices=("slurm", "local", "serial"), default="slurm" if have_slurm() else "local")
            p.add_argument("--dry-run", action="store_true")
            p.add_argument("--retry-failed", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name, spec in load_grids(Path(args.file)).items():
                print(f"{name:16s} {len(get_grid(name, Path(args.file)).runs):4d} runs  {spec.get('description', '')}")
            return 0
        grid = get_grid(args.grid, Path(args.file))
        if args.command == "submit":
            return submit(grid, args.launcher, args.dry_run, args.retry_failed, args.set)
        return print_status(grid, args.set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
