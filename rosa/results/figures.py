"""Figures from a runs tree (matplotlib, Agg backend: no display needed).

- ``loss-<dataset>.png``: training and validation loss against the step, one line per run,
  coloured by method (every logged point: TensorBoard files are read with no sampling);
- ``<metric>-vs-params-<dataset>.png``: the headline metric (the dataset spec's first metric, as in
  the tables) of each evaluated run against its
  trainable parameters (log scale), coloured by method;
- ``peak-memory.png``: peak training memory per method (the largest over its runs), per dataset.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rosa.atomic import atomic_write  # noqa: E402
from rosa.results.compile import RunRow, read_run  # noqa: E402
from rosa.runs import find_runs  # noqa: E402

LOSS_TAGS = (("train/loss", "training loss"), ("val/loss", "validation loss"))


def read_scalars(run_dir: Path, tags: tuple[str, ...]) -> dict[str, tuple[list[int], list[float]]]:
    """Every point of each tag in the run's event files (size_guidance 0 keeps all of them)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    present = set(acc.Tags().get("scalars", []))
    out = {}
    for tag in tags:
        if tag in present:
            events = acc.Scalars(tag)
            out[tag] = ([e.step for e in events], [e.value for e in events])
    return out


def headline_metric(dataset: str) -> str:
    from rosa.data import get_spec

    return get_spec(dataset).headline_metric


def colours(methods) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {m: cycle[i % len(cycle)] for i, m in enumerate(sorted(methods))}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150))
    plt.close(fig)
    return path


def loss_figure(dataset: str, rows: list[RunRow], colour: dict, out: Path) -> Path | None:
    curves = [(r, read_scalars(r.path, tuple(t for t, _ in LOSS_TAGS))) for r in rows]
    if not any(c for _, c in curves):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (tag, title) in zip(axes, LOSS_TAGS):
        labelled = set()
        for r, c in curves:
            if tag in c:
                steps, values = c[tag]
                ax.plot(
                    steps,
                    values,
                    color=colour[r.method],
                    marker="o" if len(steps) < 3 else None,
                    label=None if r.method in labelled else r.method,
                    alpha=0.8,
                )
                labelled.add(r.method)
        ax.set(title=f"{dataset}: {title}", xlabel="step", ylabel="loss")
        if labelled:
            ax.legend()
    return _save(fig, out / f"loss-{dataset}.png")


def metric_figure(dataset: str, rows: list[RunRow], colour: dict, out: Path) -> Path | None:
    metric = headline_metric(dataset)
    points = [r for r in rows if r.problem is None and metric in r.metrics and r.trainable]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r.method for r in points}):
        mine = sorted((r for r in points if r.method == method), key=lambda r: r.trainable)
        ax.plot(
            [r.trainable for r in mine],
            [r.metrics[metric] for r in mine],
            marker="o",
            color=colour[method],
            label=method,
        )
    ax.set_xscale("log")
    ax.set(title=f"{dataset}: {metric} vs trainable parameters", xlabel="trainable parameters", ylabel=metric)
    ax.legend()
    return _save(fig, out / f"{metric}-vs-params-{dataset}.png")


def memory_figure(rows: list[RunRow], colour: dict, out: Path) -> Path | None:
    rows = [r for r in rows if r.peak_mem_gb is not None]
    if not rows:
        return None
    datasets = sorted({r.dataset for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets) + 1, 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        peak = {}
        for r in rows:
            if r.dataset == dataset:
                peak[r.method] = max(peak.get(r.method, 0.0), r.peak_mem_gb)
        methods = sorted(peak)
        bars = ax.bar(methods, [peak[m] for m in methods], color=[colour[m] for m in methods])
        ax.bar_label(bars, fmt="%.2f")
        ax.set(title=f"{dataset}: peak memory", ylabel="GiB")
    return _save(fig, out / "peak-memory.png")


def make_figures(root: Path, out: Path, split: str = "test") -> list[Path]:
    rows = [read_run(p, split) for p in find_runs(root)]
    rows = [r for r in rows if r.dataset != "?"]
    colour = colours({r.method for r in rows})
    written = []
    for dataset in sorted({r.dataset for r in rows}):
        mine = [r for r in rows if r.dataset == dataset]
        written += [loss_figure(dataset, mine, colour, out), metric_figure(dataset, mine, colour, out)]
    written.append(memory_figure(rows, colour, out))
    return [p for p in written if p is not None]
