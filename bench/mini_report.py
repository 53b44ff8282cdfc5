"""Write docs/mini-reproduction.md's results section from the `mini` grid's runs (jobs.yaml).

Reads the runs exactly as ``compile_results.py`` does (``rosa.results.compile.build_tables``), then
writes between the ``<!-- bench:mini -->`` markers of the page: the table (headline metric and the
other ViGGO metrics per method, trainable parameters, mean step time, peak memory, training time),
the base row, the ranking by the headline metric, and a figure (metric vs trainable parameters,
the base model as a dashed line) to docs/figures/mini-viggo.png. The discussion outside the markers
is written by hand and kept.

    python bench/mini_report.py [runs/mini] [--split validation] [--metric slot_f1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DOC = ROOT / "docs" / "mini-reproduction.md"
FIGURE = ROOT / "docs" / "figures" / "mini-viggo.png"


def figure(rows, metric: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rosa.atomic import atomic_write
    from rosa.results.compile import BASE

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        if r.method == BASE:
            ax.axhline(r.metrics[metric], color="grey", linestyle="--", label="base (untrained)")
        else:
            ax.scatter([r.trainable], [r.metrics[metric]], s=50, label=r.method, zorder=3)
            ax.annotate(f"{r.metrics[metric]:.3f}", (r.trainable, r.metrics[metric]), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set(title=f"ViGGO ({metric}) vs trainable parameters, SmolLM2-135M", xlabel="trainable parameters",
           ylabel=metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(FIGURE, lambda tmp: fig.savefig(tmp, format="png", dpi=130))
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="runs/mini")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--metric", default="slot_f1",
                    help="ranking and figure metric (default slot_f1: after 48 steps exact match is ~0 everywhere "
                         "and ranks nothing)")
    args = ap.parse_args()

    import record
    from rosa.data import get_spec
    from rosa.results.compile import BASE, build_tables, read_run, to_markdown
    from rosa.runs import find_runs

    root = Path(args.root)
    tables, orphans = build_tables(root, args.split)
    rows = [r for r in (read_run(p, args.split) for p in find_runs(root)) if r.problem is None]
    if not rows:
        sys.exit(f"error: no evaluated run below {root}; run: python -m rosa.jobs submit mini --launcher serial")
    headline = get_spec(rows[0].dataset).headline_metric
    metric = args.metric
    figure(rows, metric)
    ranked = sorted(rows, key=lambda r: -r.metrics.get(metric, float("-inf")))
    lines = [to_markdown(tables, orphans, args.split).replace(f"## {rows[0].dataset} ({args.split})",
                                                                f"### {rows[0].dataset} ({args.split})"),
             f"Ranking by {metric} (higher is better; the dataset's headline metric is {headline}): "
             + " > ".join(f"{r.method} {r.metrics[metric]:.3f}" for r in ranked) + ".",
             "",
             "Step time is the mean wall time of an optimizer step (fp32, batch 8); peak memory is the process's "
             f"peak RSS; the `{BASE}` row is the pretrained model evaluated the same way (`train.max_steps=0`).",
             "",
             f"![{metric} vs trainable parameters](figures/{FIGURE.name})"]
    record.write("mini", "\n".join(lines), "python -m rosa.jobs submit mini --launcher serial && "
                 "python bench/mini_report.py", doc=DOC, fenced=False)
    print("\n".join(lines))
    print(f"wrote {DOC.relative_to(ROOT)} and {FIGURE.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
