"""Results tables: one per dataset, a row per evaluated run, grouped by parameter budget.

Sources per run: ``config.yaml`` (method, rank, density), ``status.json`` (state, precision,
trainable parameters, peak memory, training time), ``metrics-<split>.json`` and the lm-eval results
(``lm_eval-<task>.json``, columns ``<task>/<metric>,<filter>`` after the dataset's, whatever the split;
a run with only those is listed too: ``rosa.evaluation.lm_eval``); a run whose best adapter
(``train.keep_best``) was evaluated too (``metrics-<split>-best.json``) has a second row, its method shown
as ``<method> (best@<step>)`` (lm-eval's columns are the final adapter's: on the first row only). Rows are grouped
as the RoSA tables are, by budget in LoRA-rank units: a run's trainable count divided by the count
of one rank of an (all-linear) LoRA run of the same model and dataset, rounded to a power of two
(``r~8``). Without a LoRA run to measure the unit, the group is the order of magnitude of the count
(``~100K``); full fine-tuning is its own group, and so is a run of 0 steps, shown as the method
``base`` (the untrained model evaluated the same way, ``train.max_steps=0``). The best value of each metric in a table is bold
(lower is better for perplexity, bits per token and loss). Metric columns follow the dataset
spec's ``metrics`` (headline first; ``rosa/data/<name>.py``), then any other metric a run holds. Unfinished, failed and unevaluated
runs, and unreadable metrics files (by path), are listed under the table; they never stop it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rosa.evaluation.lm_eval import read_metrics as read_lm_eval_metrics
from rosa.methods import METHODS
from rosa.metrics import lower_is_better
from rosa.provenance import changed_result_code
from rosa.runs import find_runs, recover_status, result_name

BASE = "base"  # a run of 0 steps: the pretrained model as it is


@dataclass
class RunRow:
    path: Path
    dataset: str = "?"
    model: str = "?"
    method: str = "?"
    rank: float | None = None
    density: float | None = None
    precision: str = "?"
    trainable: int | None = None
    peak_mem_gb: float | None = None
    train_time_s: float | None = None
    step_time_s: float | None = None
    metrics: dict = field(default_factory=dict)
    lower_better: set = field(
        default_factory=set
    )  # metrics where lower is better that LOWER_IS_BETTER misses (lm-eval's)
    budget: str = ""
    budget_key: float = 0.0
    kind: type | None = None  # its method's class (rosa.methods.METHODS): capabilities, table label
    code: str = "unknown"  # the code that trained it (code_label)
    code_key: str | None = None  # its committed code fingerprint, None if unknown, dirty or resumed (code_key)
    problem: str | None = None  # why the run is not in the table
    checkpoint: str = "last"  # the adapter evaluated: the final one, or the best (train.keep_best)


def read_run(run_dir: Path, split: str, checkpoint: str = "last") -> RunRow:
    row = RunRow(run_dir, checkpoint=checkpoint)
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        fn = cfg.get("fnmodel") or {}
        row.dataset, row.model, row.method = cfg["dataset"]["name"], str(cfg["model"]["name"]), fn.get("name", "?")
        if row.method in METHODS:  # the method says how its runs are shown (label, rank, density)
            shown = METHODS[row.method].table_row(fn)
            row.method, row.rank, row.density = shown["method"], shown["rank"], shown["density"]
            row.kind = METHODS[fn["name"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        row.problem = f"unreadable config.yaml ({type(err).__name__})"
        return row
    row.density = adapter_density(run_dir, row.density)
    status = recover_status(run_dir) or {"state": "not started"}
    row.precision = status.get("precision", "?")
    row.trainable, row.peak_mem_gb, row.train_time_s = (
        status.get("trainable_params"),
        status.get("peak_mem_gb"),
        status.get("train_time_s"),
    )
    row.step_time_s = status.get("step_time_s")
    row.code, row.code_key = code_label(status.get("trained_with")), code_key(status.get("trained_with"))
    if status.get("state") == "done" and status.get("steps") == 0:
        row.method, row.rank, row.density, row.trainable = BASE, None, None, 0
    state = status.get("state", "?")
    if state != "done":
        detail = f" (step {status.get('steps')}/{status.get('total_steps')})" if status.get("total_steps") else ""
        error = f": {status['error']}" if status.get("error") else ""
        row.problem = f"{state}{detail}{error}"
        return row
    lm_eval_metrics, row.lower_better = read_lm_eval_metrics(run_dir) if checkpoint == "last" else ({}, set())
    path = run_dir / f"metrics-{result_name(split, checkpoint)}.json"
    if not path.exists():
        if not lm_eval_metrics:
            row.problem = f"not evaluated on {split} (run: python eval.py {run_dir} --split {split})"
        row.metrics = lm_eval_metrics
        return row
    try:
        record = json.loads(path.read_text())
        row.metrics = {k: float(v) for k, v in record["metrics"].items()} | lm_eval_metrics
        if checkpoint != "last":
            row.method += f" ({checkpoint}@{record.get('checkpoint_step', '?')})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        row.problem = f"corrupt metrics file {path} ({type(err).__name__}: {err})".splitlines()[0]
    return row


def code_label(trained_with: list[dict] | None) -> str:
    """The code that trained a run (status.json's ``trained_with``): ``abc1234``, ``abc1234+dirty``
    (files that decide a run's numbers differed from the commit: ``rosa.provenance.RESULT_CODE``), ``abc1234 > def5678`` (resumed under other code), or
    ``unknown`` (a run from before provenance was recorded, or outside a git checkout)."""
    labels = []
    for entry in trained_with or []:
        if not entry.get("commit"):
            labels.append("unknown")
        else:
            labels.append(entry["commit"][:7] + ("+dirty" if changed_result_code(entry) else ""))
    return " > ".join(labels) or "unknown"


def code_key(trained_with: list[dict] | None) -> str | None:
    """The fingerprint of the committed code that trained a run from start to end (``rosa.provenance``:
    commits that differ only in docs, tests or results share it), or None: unknown, older than the
    fingerprint (then the commit stands in), resumed under other code, or with changed result code."""
    entries = trained_with or []
    if len(entries) != 1 or not entries[0].get("commit") or changed_result_code(entries[0]):
        return None
    return entries[0].get("code") or f"commit {entries[0]['commit']}"


def mixed_code_warning(rows: list["RunRow"]) -> str | None:
    """A warning unless every row was trained by the same committed code (one fingerprint, no dirty
    tree, no resume under other code, none unknown): otherwise their differences may come from the
    code, not the methods. Rows of several commits with one fingerprint are one code."""
    keys = {r.code_key for r in rows}
    if not rows or (len(keys) == 1 and None not in keys):
        return None
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.code] = counts.get(r.code, 0) + 1
    listed = ", ".join(f"{code} ({n} run{'s' if n > 1 else ''})" for code, n in sorted(counts.items()))
    return f"warning: these rows were not all trained by the same committed code: {listed}"


def adapter_density(run_dir: Path, configured):
    """The density the run's adapter really has (its method state: from a budget or a mask file),
    else the configured one."""
    try:
        density = json.loads((run_dir / "adapter" / "adapter.json").read_text())["extra_state"]["density"]
    except (OSError, ValueError, KeyError, TypeError):
        return configured
    return density if isinstance(density, (int, float)) else configured


def assign_budgets(rows: list[RunRow]) -> None:
    """Budget group of every row, in LoRA-rank units where a LoRA run of the same model gives one."""
    units: dict[tuple, list[float]] = {}
    for r in rows:
        if (
            r.kind is not None
            and r.kind.budget_unit
            and r.method != BASE
            and r.trainable
            and isinstance(r.rank, (int, float))
            and r.rank >= 1
        ):
            units.setdefault((r.dataset, r.model), []).append(r.trainable / r.rank)
    for r in rows:
        unit = units.get((r.dataset, r.model))
        if r.method == BASE:
            r.budget, r.budget_key = "none", -math.inf
        elif r.kind is not None and r.kind.trains_base_weights:
            r.budget, r.budget_key = "full", math.inf
        elif not r.trainable:
            r.budget, r.budget_key = "?", -1.0
        elif unit:
            k = round(math.log2(max(r.trainable / statistics.median(unit), 1e-9)))
            r.budget, r.budget_key = (f"r~{2**k:g}" if k >= 0 else f"r~1/{2**-k:g}"), float(k)
        else:
            k = round(math.log10(r.trainable))
            r.budget, r.budget_key = f"~{human(10**k)}", float(k)


def human(n: float | None) -> str:
    if n is None:
        return ""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:g}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def metric_order(dataset: str, rows: list[RunRow]) -> list[str]:
    """The dataset's metrics in its spec's order (headline first), then any others the rows hold."""
    from rosa.data import DATASETS

    spec = DATASETS.get(dataset)
    names = [m for m in (spec.metrics if spec else ()) if any(m in r.metrics for r in rows)]
    for r in rows:
        names += [m for m in r.metrics if m not in names]
    return names


def best_values(rows: list[RunRow], metrics: list[str]) -> dict[str, float]:
    best = {}
    for m in metrics:
        values = [r.metrics[m] for r in rows if m in r.metrics and math.isfinite(r.metrics[m])]
        if values:
            lower = lower_is_better(m) or any(m in r.lower_better for r in rows)
            best[m] = min(values) if lower else max(values)
    return best


@dataclass
class Table:
    dataset: str
    header: list[str]
    rows: list[list[str]]  # formatted cells
    raw: list[dict]  # unformatted values, for the CSV
    bold: list[set[int]]  # per row: column indices to bold
    groups: list[str]  # per row: its budget group (a rule between groups)
    unlisted: list[str]  # "path: reason" of runs not in the table
    warning: str | None = None  # the rows were trained by different code (mixed_code_warning)


def build_tables(root: Path, split: str = "test") -> tuple[list[Table], list[str]]:
    runs = find_runs(root)
    rows = [read_run(p, split) for p in runs]
    rows += [read_run(p, split, "best") for p in runs if (p / f"metrics-{result_name(split, 'best')}.json").exists()]
    assign_budgets([r for r in rows if r.problem is None])
    orphans = [f"{r.path}: {r.problem}" for r in rows if r.dataset == "?"]
    tables = []
    for dataset in sorted({r.dataset for r in rows if r.dataset != "?"}):
        mine = [r for r in rows if r.dataset == dataset]
        listed = sorted(
            (r for r in mine if r.problem is None),
            key=lambda r: (r.model, r.budget_key, r.method, r.trainable or 0, str(r.path)),
        )
        metrics = metric_order(dataset, listed)
        best = best_values(listed, metrics)
        header = [
            "model",
            "budget",
            "method",
            "rank",
            "density",
            "precision",
            "trainable",
            *metrics,
            "step time (s)",
            "peak mem (GiB)",
            "train time",
            "code",
            "run",
        ]
        table = Table(
            dataset,
            header,
            [],
            [],
            [],
            [],
            [f"{r.path}: {r.problem}" for r in mine if r.problem],
            mixed_code_warning(listed),
        )
        for r in listed:
            cells = [r.model, r.budget, r.method, _num(r.rank), _num(r.density), r.precision, human(r.trainable)]
            bold = set()
            for i, m in enumerate(metrics):
                value = r.metrics.get(m)
                cells.append("" if value is None else f"{value:.4g}")
                if value is not None and best.get(m) == value:
                    bold.add(7 + i)
            cells += [
                "" if r.step_time_s is None else f"{r.step_time_s:.2f}",
                "" if r.peak_mem_gb is None else f"{r.peak_mem_gb:.2f}",
                duration(r.train_time_s),
                r.code,
                _relative(r.path, root),
            ]
            table.rows.append(cells)
            table.bold.append(bold)
            table.groups.append(f"{r.model} {r.budget}")
            table.raw.append(
                {
                    "dataset": dataset,
                    "split": split,
                    "run": str(r.path),
                    "model": r.model,
                    "budget": r.budget,
                    "method": r.method,
                    "checkpoint": r.checkpoint,
                    "rank": r.rank,
                    "density": r.density,
                    "precision": r.precision,
                    "trainable_params": r.trainable,
                    **r.metrics,
                    "step_time_s": r.step_time_s,
                    "peak_mem_gb": r.peak_mem_gb,
                    "train_time_s": r.train_time_s,
                    "code": r.code,
                }
            )
        tables.append(table)
    return tables, orphans


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) if path != root else path.name
    except ValueError:
        return str(path)


def _num(value) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, (int, float)) else str(value)


def to_markdown(tables: list[Table], orphans: list[str], split: str) -> str:
    out = []
    for t in tables:
        out.append(f"## {t.dataset} ({split})\n")
        if t.warning:
            out.append(f"> {t.warning}\n")
        if t.rows:
            out.append("| " + " | ".join(t.header) + " |")
            out.append("|" + "|".join("---" for _ in t.header) + "|")
            for cells, bold in zip(t.rows, t.bold):
                out.append("| " + " | ".join(f"**{c}**" if i in bold else c for i, c in enumerate(cells)) + " |")
        else:
            out.append("(no evaluated run)")
        if t.unlisted:
            out.append("\nNot in the table:\n")
            out += [f"- {line}" for line in t.unlisted]
        out.append("")
    if orphans:
        out.append("## Unreadable runs\n")
        out += [f"- {line}" for line in orphans]
        out.append("")
    return "\n".join(out)


def to_csv(tables: list[Table]) -> str:
    records = [r for t in tables for r in t.raw]
    columns = []
    for r in records:
        columns += [k for k in r if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("~", r"$\sim$")):
        text = text.replace(a, b)
    return text


def to_latex(tables: list[Table], split: str) -> str:
    out = ["% generated by compile_results.py; needs \\usepackage{booktabs}"]
    for t in tables:
        if not t.rows:
            continue
        header = t.header[:-1]  # the run folder stays out of the paper table
        out += [
            f"% {t.dataset} ({split})",
            "\\begin{tabular}{" + "l" * 6 + "r" * (len(header) - 6) + "}",
            "\\toprule",
            " & ".join(_tex(h) for h in header) + " \\\\",
            "\\midrule",
        ]
        for i, (cells, bold) in enumerate(zip(t.rows, t.bold)):
            if i and t.groups[i] != t.groups[i - 1]:
                out.append("\\midrule")
            out.append(
                " & ".join(f"\\textbf{{{_tex(c)}}}" if j in bold else _tex(c) for j, c in enumerate(cells[:-1]))
                + " \\\\"
            )
        out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)
