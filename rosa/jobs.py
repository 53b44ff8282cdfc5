"""Named experiment grids (``jobs.yaml``): submit the runs not done yet, report where each one stands.

    python -m rosa.jobs list
    python -m rosa.jobs submit <grid> [--launcher slurm|local|serial] [--dry-run] [--retry-failed] [--set KEY=VALUE ...]
    python -m rosa.jobs status <grid> [--set KEY=VALUE ...]
    python -m rosa.jobs collect <grid> [--set KEY=VALUE ...]

Each run of a grid is a list of train.py overrides. Its folder comes from the composed config
(``rosa.config.compose`` + ``validate`` + ``rosa.runs.run_dir_for``), the same folder
``train.py`` would use, so ``submit`` can skip finished runs and a grid can be resubmitted at any time.

``--launcher serial`` runs the runs one after another in this terminal (``train.py`` in a child
process each, output shown), the right choice for a small machine: a kill stops the grid, and the
same command resumes it (finished runs are skipped, an unfinished one resumes from its checkpoint).

``--launcher slurm|local`` submits the runs through ``rosa.launch`` (the path of ``train.py -m``
sweeps too) with our launcher presets (conf/hydra/launcher/) and the grid's ``slurm:`` map on top:
one job per run (one array on SLURM), each given its validated config; ``submit`` returns once they
are submitted. Sweep folder: ``<output.path>/.jobs/<grid>``.

A grid with a ``results:`` folder keeps its finished cells' small files there, committed to git
(``rosa.results.committed``): ``submit`` skips a cell whose committed copy was trained and evaluated
by the checkout's code, trains the others in ``<output.path>/code-<fingerprint>/`` (one folder per
code version: a run of other code is never resumed) and commits each run as it finishes (serial);
``collect`` commits the finished runs of the other launchers. It refuses a checkout whose code
differs from its commit: a committed result names the code that made it.

What was submitted is ``<sweep folder>/jobs.json`` (``rosa.launch``: run folder -> latest job id);
a started job also writes its id into the run's ``status.json``. ``status`` joins the scheduler's
state of each run's latest job (SLURM: ``sacct``, so the cluster needs accounting) with the run's
``status.json``; it reads no pickle.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rosa.config import CONF_DIR, ConfigError, compose_run, expand_sweeps, rewrite_overrides

JOBS_FILE = CONF_DIR.parent / "jobs.yaml"
TRAIN_PY = CONF_DIR.parent / "train.py"


# ----------------------------------------------------------------------------- grids
@dataclass
class Entry:
    overrides: list[str]
    run_dir: Path
    error: str | None = None
    split: str = "test"  # the split its end-of-training evaluation scores
    run: object = None  # the validated RunConfig and its config.yaml (what a job trains)
    config_yaml: str = ""


@dataclass
class Grid:
    name: str
    description: str
    slurm: dict
    runs: list[list[str]] = field(default_factory=list)
    results: Path | None = None  # committed results folder (rosa.results.committed), or None


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
    results = Path(path).parent / spec["results"] if spec.get("results") else None
    return Grid(name, spec.get("description", ""), dict(spec.get("slurm") or {}), runs, results)


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
            names = sorted(
                str(p.relative_to(CONF_DIR / "experiment").with_suffix(""))
                for p in (CONF_DIR / "experiment").glob(value + ".yaml")
            )
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
            run, config_yaml = compose_run(overrides)
            entries.append(Entry(overrides, run_dir_for(run), split=run.eval.split, run=run, config_yaml=config_yaml))
        except ConfigError as err:
            entries.append(Entry(overrides, Path("?"), error=str(err)))
    return entries


# ----------------------------------------------------------------------------- committed results
@dataclass
class Committed:
    """A results grid's view of its cells: the checkout's code, the runs root and each cell's copy."""

    version: dict
    root: Path
    results: Path

    def cell(self, e: Entry) -> Path:
        from rosa.results.committed import cell_path

        return cell_path(self.results, self.root, e.run_dir)

    def why_not_current(self, e: Entry) -> str | None:
        from rosa.results.committed import why_not_current

        return why_not_current(self.cell(e), self.version, e.split)

    def finished_here(self, e: Entry) -> bool:
        """Whether the run folder holds a run of this code, finished and evaluated."""
        from rosa.results.committed import why_not_current

        return not e.error and why_not_current(e.run_dir, self.version, e.split) is None

    def commit_if_finished(self, e: Entry) -> bool:
        """Commit a run of this code that finished and was evaluated here; whether it did."""
        from rosa.results.committed import commit_cell

        if not self.finished_here(e):
            return False
        commit_cell(e.run_dir, self.cell(e))
        return True


def resolve_committed(grid: Grid, extra: list[str]) -> tuple[list[Entry], Committed | None]:
    """``resolve``; for a grid with ``results:``, with every run below ``<output.path>/code-<fingerprint>``.
    ConfigError when the checkout's result code differs from its commit."""
    from rosa.provenance import changed_result_code, code_version

    entries = resolve(grid, extra)
    if grid.results is None or any(e.error for e in entries):
        return entries, None
    version = code_version()
    if not version["code"]:
        raise ConfigError(f"grid {grid.name} commits its results to {grid.results}: run it in a git checkout")
    changed = changed_result_code(version)
    if changed:
        raise ConfigError(
            f"grid {grid.name} commits its results, but {', '.join(changed)} differ from commit "
            f"{version['commit'][:7]}; allowed: a clean checkout (commit or stash them first)"
        )
    root = runs_root(entries) / f"code-{version['code']}"
    entries = resolve(grid, [*extra, f"output.path={root}"])
    return entries, Committed(version, root, grid.results)


# ----------------------------------------------------------------------------- submitit's folder
def sweep_dir(runs_root: Path, grid: str) -> Path:
    """A grid's sweep folder: its jobs.json and, below it, submitit's files (the launcher presets' folder)."""
    return Path(runs_root) / ".jobs" / grid


def runs_root(entries: list[Entry]) -> Path:
    for e in entries:
        if e.error is None:
            return e.run_dir.parent.parent.parent
    return Path("runs")


def submitted(entries: list[Entry], folder: Path) -> dict[str, object]:
    """Run folder -> its latest submitit job, for the runs in ``entries`` (``rosa.launch``'s jobs.json)."""
    from rosa.launch import recorded_jobs

    wanted = {str(e.run_dir) for e in entries if e.error is None}
    return {run_dir: job for run_dir, job in recorded_jobs(folder).items() if run_dir in wanted}


# ----------------------------------------------------------------------------- state
def have_slurm() -> bool:
    return shutil.which("squeue") is not None and shutil.which("sbatch") is not None


def job_alive(job, run_state: str | None) -> tuple[str | None, str]:
    """(pending|running, or None once ended; the scheduler's state) as submitit sees the job.

    A local job seen from another process is known to submitit only by its result file (FINISHED);
    until that is written it counts as alive, running when its run says so."""
    import submitit

    state = job.state
    if isinstance(job, submitit.LocalJob):
        return (None, state) if state == "FINISHED" else ("running" if run_state == "running" else "pending", "")
    if job.done():
        return None, state
    return ("running" if state.startswith(("RUNNING", "COMPLETING")) else "pending"), state


def run_state(entry: Entry, job) -> tuple[str, str]:
    """(pending|running|done|failed|not submitted, detail) for one run."""
    from rosa.runs import read_status

    if entry.error:
        return "failed", f"config: {entry.error}"
    status = read_status(entry.run_dir) or {}
    if status.get("state") == "done":
        return "done", ""
    error = (status.get("error") or "").splitlines()[0] if status.get("error") else ""
    if job is not None:
        alive, scheduler = job_alive(job, status.get("state"))
        if alive == "pending" and status.get("steps"):
            return alive, f"resuming from step {status['steps']}"
        if alive:
            return alive, scheduler if scheduler not in ("", "PENDING", "RUNNING") else ""
        if scheduler not in ("COMPLETED", "FINISHED"):
            return "failed", f"SLURM {scheduler}" + (f"; {error}" if error else "")
    if status.get("state") == "failed":
        return "failed", error
    if status.get("state") in ("running", "interrupted"):
        return (
            "failed",
            f"stopped at step {status.get('steps', 0)} ({status.get('state')}: "
            f"{error or 'no job alive'}); resubmit to resume",
        )
    if job is not None:
        return "failed", "the job ended before the run started; see its log"
    return "not submitted", ""


def statuses(entries: list[Entry], jobs: dict) -> list[tuple[Entry, str, str, object]]:
    """(entry, state, detail, its submitit job or None) per run; ``jobs`` from :func:`submitted`."""
    rows = []
    for e in entries:
        job = jobs.get(str(e.run_dir))
        rows.append((e, *run_state(e, job), job))
    return rows


# ----------------------------------------------------------------------------- submission
def grid_launcher(grid: Grid, launcher: str, folder: Path):
    """Our launcher preset with the grid's ``slurm:`` resources on top (the local preset takes those its
    schema has: time limit, GPUs, tasks, name); its sweep folder is ``folder``."""
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf

    from rosa.command_line import sweep_launcher

    chosen = sweep_launcher([f"hydra/launcher={launcher}", f"hydra.sweep.dir={folder}"])
    params = {"name": f"rosa-{grid.name}", **grid.slurm}
    if launcher == "local":
        params = {k: v for k, v in params.items() if k in {f.name for f in dataclasses.fields(LocalQueueConf)}}
    for key, value in params.items():
        if isinstance(value, dict):  # merged key by key into the preset's map
            chosen.params[key] = {**(chosen.params.get(key) or {}), **value}
        else:
            chosen.params[key] = value
    return chosen


# ----------------------------------------------------------------------------- commands
def submit(grid: Grid, launcher: str, dry_run: bool, retry_failed: bool, extra: list[str], out=None) -> int:
    from rosa.runs import read_status

    out = out or sys.stdout
    entries, committed = resolve_committed(grid, extra)
    bad = [e for e in entries if e.error]
    for e in bad:
        print(f"error: {' '.join(e.overrides)}: {e.error}", file=sys.stderr)
    if bad:
        return 2
    folder = sweep_dir(runs_root(entries), grid.name)
    todo, seen = [], set()
    for e, state, detail, _ in statuses(entries, submitted(entries, folder)):
        if str(e.run_dir) in seen:
            continue
        seen.add(str(e.run_dir))
        if committed is not None:
            if committed.why_not_current(e) is None:
                print(f"skip  committed {committed.cell(e)}", file=out)
                continue
            if dry_run and committed.finished_here(e):
                print(f"skip  finished {e.run_dir} (would commit it to {committed.cell(e)})", file=out)
                continue
            if not dry_run and committed.commit_if_finished(e):
                print(f"skip  committed {committed.cell(e)} (finished here, committed now)", file=out)
                continue
            if state == "done":  # finished, not evaluated: the end-of-training evaluation failed
                print(
                    f"error: {e.run_dir} is done but not evaluated on {e.split}; run: python eval.py {e.run_dir} "
                    f"--split {e.split}",
                    file=sys.stderr,
                )
                return 2
        failed = state == "failed" and (read_status(e.run_dir) or {}).get("state") == "failed"
        if state in ("done", "pending", "running") or (failed and not retry_failed):
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
        return run_serially(todo, out, committed)
    from rosa.launch import submit as submit_jobs

    jobs = submit_jobs([(e.run, e.config_yaml) for e in todo], grid_launcher(grid, launcher, folder.resolve()))
    for e, job in zip(todo, jobs):
        print(f"submitted {job.job_id} {e.run_dir}", file=out)
    if committed is not None:
        print(f"when they finish: python -m rosa.jobs collect {grid.name} (commits them to {grid.results})", file=out)
    return 0


def run_serially(todo: list[Entry], out, committed: Committed | None = None) -> int:
    """Each run in a child ``train.py`` process, one at a time (each committed as it finishes, for a
    results grid); the exit status of the first failure."""
    failures = []
    for i, e in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {e.run_dir}: python train.py {' '.join(e.overrides)}", file=out, flush=True)
        status = subprocess.call([sys.executable, str(TRAIN_PY), *e.overrides])
        if not status and committed is not None:
            if committed.commit_if_finished(e):
                print(f"[{i}/{len(todo)}] committed {committed.cell(e)}", file=out, flush=True)
            else:
                status = 1
                print(f"[{i}/{len(todo)}] not committed: {committed.why_not_current(e)}", file=out, flush=True)
        if status:
            failures.append((e, status))
            print(f"[{i}/{len(todo)}] exit status {status}: {e.run_dir}", file=out, flush=True)
    for e, status in failures:
        print(f"failed ({status}): {e.run_dir}", file=sys.stderr)
    return failures[0][1] if failures else 0


def print_status(grid: Grid, extra: list[str], out=None) -> int:
    out = out or sys.stdout
    entries, committed = resolve_committed(grid, extra)
    jobs = submitted(entries, sweep_dir(runs_root(entries), grid.name))
    counts: dict[str, int] = {}
    print(f"{'state':13s} {'job':>10s}  run  [detail]  logs", file=out)
    for e, state, detail, job in statuses(entries, jobs):
        if committed is not None and committed.why_not_current(e) is None:
            state, detail = "committed", str(committed.cell(e))
        counts[state] = counts.get(state, 0) + 1
        logs = str(job.paths.stdout) if job else ""
        if not logs and (e.run_dir / "train.log").exists():
            logs = str(e.run_dir / "train.log")
        jid = job.job_id if job else "-"
        print(
            f"{state:13s} {jid:>10s}  {e.run_dir}"
            + (f"  [{detail}]" if detail else "")
            + (f"  {logs}" if logs else ""),
            file=out,
        )
    print("total: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out)
    return 0


def collect(grid: Grid, extra: list[str], out=None) -> int:
    """Commit every run of a results grid that finished and was evaluated here under this code."""
    out = out or sys.stdout
    entries, committed = resolve_committed(grid, extra)
    if committed is None:
        raise ConfigError(f"grid {grid.name} has no results: folder in jobs.yaml; nothing to collect")
    done = 0
    for e in entries:
        if committed.why_not_current(e) is not None and committed.commit_if_finished(e):
            print(f"committed {committed.cell(e)}", file=out)
            done += 1
    current = sum(committed.why_not_current(e) is None for e in entries)
    print(
        f"grid {grid.name}: {done} committed now, {current} of {len(entries)} cells current in {grid.results}", file=out
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rosa.jobs", description=__doc__.split("\n")[0])
    parser.add_argument("--file", default=str(JOBS_FILE), help="the grids file (default: jobs.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the grids and their run counts")
    for name in ("submit", "status", "collect"):
        p = sub.add_parser(name)
        p.add_argument("grid")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="an override added to every run (e.g. output.path=/scratch/runs)",
        )
        if name == "submit":
            p.add_argument(
                "--launcher", choices=("slurm", "local", "serial"), default="slurm" if have_slurm() else "local"
            )
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
        if args.command == "collect":
            return collect(grid, args.set)
        return print_status(grid, args.set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
