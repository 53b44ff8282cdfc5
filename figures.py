"""Figures: ``python figures.py runs/ [--out figures] [--split test]``.

Writes PNGs (loss curves per dataset coloured by method, the headline metric against trainable
parameters per dataset, peak memory per method) and prints their paths. See docs/evaluation.md.
"""

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Plot training curves and results of a runs tree.")
    parser.add_argument("path", help="a folder holding runs (searched recursively)")
    parser.add_argument("--out", default="figures", help="output folder (default: ./figures)")
    parser.add_argument("--split", choices=["validation", "test"], default="test", help="metrics to plot")
    args = parser.parse_args(argv)

    from rosa.results.figures import make_figures
    from rosa.runs import find_runs

    root = Path(args.path)
    if not root.is_dir() or not find_runs(root):
        print(f"error: no runs below {root} (a run is a folder holding config.yaml)", file=sys.stderr)
        return 2
    written = make_figures(root, Path(args.out), args.split)
    for path in written:
        print(path)
    if not written:
        print("no figure: the runs have no logged losses, metrics or memory yet", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
