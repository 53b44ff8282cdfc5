"""lm-evaluation-harness tasks on a finished run's own model: ``python eval.py RUN --lm-eval gsm8k_local``.

lm-eval loads an adapter only through ``peft=`` (``PeftModel.from_pretrained``): not a RoSA or ROSA
adapter, and an exported merged model loses the "unmerged on a 4-bit base" case. Here the run's model
comes from :func:`rosa.evaluation.load.load_run` (merged or not, any precision, NF4 included) and goes
to lm-eval as a model instance (``HFLM(pretrained=model, tokenizer=...)``, the run's autocast as its
``mixed_precision_dtype``); ``lm_eval.simple_evaluate`` then runs each task with lm-eval's own prompt,
few-shot setting, generation settings, filters and metrics, and its default seeds.

Tasks: a local task of ``lm_eval_tasks/`` (an lm-eval task YAML over local files, named by its
``task:``, e.g. ``gsm8k_local``), or any task lm-eval registers, whose data must then load (offline:
only what the datasets cache already holds; ``HF_HUB_OFFLINE=1`` fails at once instead of retrying).
A local task YAML is lm-eval's own form, with two paths resolved here: ``include`` relative to
lm-eval's installed task folder (``lm_eval/tasks``: the task is lm-eval's file, not a copy) and
``dataset_kwargs.data_files`` relative to the YAML's folder.

Per run and requested task (written atomically, skipped when present unless ``force``):
    lm_eval-<task>.json           ``metrics`` per task (lm-eval's keys, ``exact_match,strict-match``),
                                  ``stderr``, ``higher_is_better``, n, shots, versions, the task
                                  configs, limit, merged or not, lm-eval's version, the code (commit)
    lm_eval-<task>-samples.jsonl  per document and filter: prompt, raw response, filtered response,
                                  target and scores (lm-eval's logged samples)
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from rosa import atomic
from rosa.evaluation.load import EvalError, load_run
from rosa.provenance import code_version
from rosa.runs import recover_status
from rosa.schema import ConfigError, did_you_mean

TASKS_DIR = Path(__file__).with_name("lm_eval_tasks")
PREFIX = "lm_eval-"
log = logging.getLogger("rosa")


def result_path(run_dir: Path, task: str) -> Path:
    return Path(run_dir) / f"{PREFIX}{_file_name(task)}.json"


def samples_path(run_dir: Path, task: str) -> Path:
    return Path(run_dir) / f"{PREFIX}{_file_name(task)}-samples.jsonl"


def _file_name(task: str) -> str:
    return re.sub(r"[^\w.-]", "_", task)


# ----------------------------------------------------------------------------- tasks


def local_tasks() -> dict[str, Path]:
    """The local tasks: ``{task name: its YAML}``."""
    from lm_eval.tasks._yaml_loader import load_yaml

    found = {}
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        found[load_yaml(path, resolve_func=False, recursive=False)["task"]] = path
    return found


def local_task_config(path: Path) -> dict:
    """A local task YAML as an lm-eval task config: lm-eval's include semantics (the included file's
    keys, then this file's over them) with the two paths of the module docstring resolved."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(path, recursive=False)
    includes = config.pop("include", [])
    merged = {}
    for include in includes if isinstance(includes, list) else [includes]:
        merged.update(load_yaml(Path(lm_eval.tasks.__file__).parent / include))
    merged.update(config)
    kwargs = merged.get("dataset_kwargs") or {}
    if "data_files" in kwargs:
        merged["dataset_kwargs"] = {**kwargs, "data_files": _beside(path.parent, kwargs["data_files"])}
    return merged


def _beside(folder: Path, files):
    if isinstance(files, dict):
        return {split: _beside(folder, f) for split, f in files.items()}
    if isinstance(files, list):
        return [_beside(folder, f) for f in files]
    return str((folder / files).resolve())


def _data_files(files) -> list[str]:
    if isinstance(files, dict):
        return [f for value in files.values() for f in _data_files(value)]
    return list(files) if isinstance(files, list) else [files]


@dataclass
class Tasks:
    """Requested task names checked once: each one's spec for ``simple_evaluate`` (a local task's
    config, or lm-eval's name) and the task manager that builds them."""

    specs: dict[str, object]
    manager: object = field(repr=False)


def resolve_tasks(names: list[str], key: str = "--lm-eval") -> Tasks:
    """Check the task names (``key`` names the option in the one-line ConfigError) and the local
    tasks' data files. lm-eval's own task index (~10 s to build) is read only for names not local."""
    from lm_eval.tasks import TaskManager

    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"{key}={names!r}: allowed: one or more task names (comma-separated on the command line)")
    local = local_tasks()
    others = [n for n in names if n not in local]
    manager = TaskManager(include_defaults=bool(others))
    allowed = f"a local task ({', '.join(local)}) or a task lm-eval registers (lm-eval ls tasks)"
    specs: dict[str, object] = {}
    for name in names:
        if name in local:
            config = local_task_config(local[name])
            for file in _data_files((config.get("dataset_kwargs") or {}).get("data_files", [])):
                if not Path(file).is_file():
                    raise ConfigError(f"{key}: task {name!r} reads {file}, which does not exist")
            specs[name] = config
        elif name in manager.all_tasks:
            specs[name] = name
        else:
            raise ConfigError(
                f"{key}: unknown task {name!r}{did_you_mean(name, [*local, *manager.all_tasks])}; allowed: {allowed}"
            )
    return Tasks(specs, manager)


# ----------------------------------------------------------------------------- evaluation


def evaluate_run_tasks(
    run_dir,
    tasks: Tasks,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int | None = None,
    force: bool = False,
    device: str | None = None,
    merge: bool | None = None,
) -> dict:
    """Run every task of ``tasks`` on ``run_dir``'s model. Returns ``{"state": "evaluated" |
    "skipped", ...}`` (evaluated: ``records``, one per task done); a task that fails raises EvalError."""
    run_dir = Path(run_dir)
    status = recover_status(run_dir)
    state = (status or {}).get("state", "not started")
    if state != "done":
        error = (status or {}).get("error")
        return {"run": str(run_dir), "state": "skipped", "reason": f"{state}" + (f": {error}" if error else "")}
    todo = [name for name in tasks.specs if force or record_problem(result_path(run_dir, name)) is not None]
    if not todo:
        names = ", ".join(result_path(run_dir, n).name for n in tasks.specs)
        return {
            "run": str(run_dir),
            "state": "skipped",
            "reason": f"already evaluated: {names} exist; --force redoes it",
        }

    import lm_eval
    from lm_eval.models.huggingface import HFLM

    # lm-eval warns that a model instance makes its loading arguments moot: we pass none
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    loaded = load_run(run_dir, device=device, merge=merge)
    batch = batch_size or loaded.run.eval.batch_size
    lm = HFLM(
        pretrained=loaded.model,
        tokenizer=loaded.tokenizer,
        batch_size=batch,
        mixed_precision_dtype=loaded.precision["autocast"],
    )
    records = []
    for name in todo:
        started = time.time()
        try:
            results = lm_eval.simple_evaluate(
                lm,
                tasks=[tasks.specs[name]],
                task_manager=tasks.manager,
                limit=limit,
                num_fewshot=num_fewshot,
                log_samples=True,
            )
        except Exception as err:
            raise EvalError(f"lm-eval task {name!r}: {type(err).__name__}: {err}".splitlines()[0]) from err
        record = {
            "task": name,
            "metrics": {t: _numbers(m, stderr=False) for t, m in results["results"].items()},
            "stderr": {t: _numbers(m, stderr=True) for t, m in results["results"].items()},
            "higher_is_better": results.get("higher_is_better", {}),
            "n_samples": {t: n["effective"] for t, n in results.get("n-samples", {}).items()},
            "n_shot": results.get("n-shot", {}),
            "versions": results.get("versions", {}),
            "configs": results.get("configs", {}),
            "limit": limit,
            "num_fewshot": num_fewshot,
            "batch_size": batch,
            "method": loaded.run.fnmodel.name,
            "merged": loaded.merged,
            "merge_note": loaded.merge_note,
            "precision": loaded.precision["name"],
            "lm_eval_version": lm_eval.__version__,
            "time_s": time.time() - started,
            "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "code": code_version(),
            "trained_with": (status or {}).get("trained_with"),
        }
        lines = [_sample_line(s) for samples in (results.get("samples") or {}).values() for s in samples]
        atomic.write_text(samples_path(run_dir, name), "".join(line + "\n" for line in lines))
        atomic.write_text(result_path(run_dir, name), json.dumps(record, indent=2, default=str) + "\n")
        records.append(record)
    return {
        "run": str(run_dir),
        "state": "evaluated",
        "records": records,
        "merged": loaded.merged,
        "merge_note": loaded.merge_note,
    }


def _numbers(metrics: dict, stderr: bool) -> dict:
    """lm-eval's ``metric,filter`` numbers of one task, without (or only) the ``_stderr`` ones."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if "," in k and ("_stderr," in k) == stderr and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _sample_line(sample: dict) -> str:
    keep = {
        "doc_id": sample.get("doc_id"),
        "filter": sample.get("filter"),
        "prompt": [args[0] for args in sample.get("arguments", [])],
        "resps": sample.get("resps"),
        "filtered_resps": sample.get("filtered_resps"),
        "target": sample.get("target"),
    }
    keep.update({m: sample[m] for m in sample.get("metrics", []) if m in sample})
    return json.dumps(keep, ensure_ascii=False, default=str)


def record_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete lm-eval record (None when it is one)."""
    return _read_record(path)[1]


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    """(the record, None), or (None, why ``path`` is not a complete lm-eval record): one read."""
    try:
        record = atomic.read_json(path)
    except (OSError, ValueError) as err:
        return None, f"{type(err).__name__}: {err}".splitlines()[0]
    problem = _content_problem(record)
    return (None, problem) if problem else (record, None)


def _content_problem(record) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        return "no metrics"
    if not all(isinstance(m, dict) for m in record["metrics"].values()):
        return "a task without metrics"
    return None


def summary_lines(name: str, result: dict) -> list[str]:
    merged = "merged" if result.get("merged") else "unmerged"
    lines = []
    for record in result["records"]:
        for task, metrics in record["metrics"].items():
            scores = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            n, shots = record["n_samples"].get(task), record["n_shot"].get(task)
            detail = ", ".join(
                str(x)
                for x in (f"n={n}" if n is not None else None, f"{shots}-shot" if shots is not None else None, merged)
                if x
            )
            lines.append(f"{name}: lm-eval {task} {scores} ({detail}, {record['time_s']:.1f}s)")
    return lines


# ----------------------------------------------------------------------------- results tables


def read_metrics(run_dir: Path) -> tuple[dict[str, float], set[str]]:
    """The lm-eval numbers of a run for the results tables: ``{"<task>/<metric>,<filter>": value}``
    from every ``lm_eval-<task>.json``, and the columns where lower is better (lm-eval's
    ``higher_is_better``). Unreadable files are left out."""
    columns: dict[str, float] = {}
    lower: set[str] = set()
    for path in sorted(Path(run_dir).glob(f"{PREFIX}*.json")):
        record, problem = _read_record(path)
        if problem is not None:
            log.warning("%s is not an lm-eval record (%s); left out of the table", path, problem)
            continue
        for task, metrics in record["metrics"].items():
            better = (record.get("higher_is_better") or {}).get(task) or {}
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    columns[f"{task}/{key}"] = float(value)
                    if better.get(key.split(",")[0]) is False:
                        lower.add(f"{task}/{key}")
    return columns, lower
