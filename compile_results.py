"""Results tables: ``python compile_results.py runs/ [--split test] [--out DIR]``.

Prints one Markdown table per dataset (a row per evaluated run, grouped by parameter budget, the
best value of each metric in bold) and writes results.md, results.csv and results.tex into
``--out`` (default: the runs folder). See docs/evaluation.md.
"""

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Compile the metrics of evaluated runs into tables.")
    parser.add_argument("path", help="a folder holding runs (searched recursively)")
    parser.add_argument("--split", choices=["validation", "test"], default="test")
    parser.add_argument("--out", help="where to write results.{md,csv,tex} (default: the runs folder)")
    args = parser.parse_args(argv)

    from rosa import atomic
    from rosa.results.compile import build_tables, to_csv, to_latex, to_markdown
    from rosa.runs import find_runs

    root = Path(args.path)
    if not root.is_dir() or not find_runs(root):
        print(f"error: no runs below {root} (a run is a folder holding config.yaml)", file=sys.stderr)
        return 2
    tables, orphans = build_tables(root, args.split)
    markdown = to_markdown(tables, orphans, args.split)
    print(markdown)
    out = Path(args.out) if args.out else root
    written = {"results.md": markdown, "results.csv": to_csv(tables), "results.tex": to_latex(tables, args.split)}
    for name, text in written.items():
        atomic.write_text(out / name, text)
    print("wrote " + ", ".join(str(out / name) for name in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
