"""Evaluate finished runs: ``python eval.py runs/`` (every run below) or ``python eval.py runs/e2e/lora/<run>``.

Writes ``predictions-<split>.jsonl`` and ``metrics-<split>.json`` into each run folder, logs the metrics
to the run's TensorBoard and prints one line per run; ``--checkpoint best`` evaluates the run's best adapter
(``train.keep_best``) instead, into ``predictions-<split>-best.jsonl`` and ``metrics-<split>-best.json``. ``python eval.py <run> --export-merged DIR`` saves
the run's merged model as a standard HF checkpoint instead. Exit status: 0, 1 if any run failed to evaluate,
2 for bad input (no runs below the folder). See docs/evaluation.md.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate finished runs on a split.")
    parser.add_argument("path", help="a run folder, or a folder holding runs (searched recursively)")
    parser.add_argument("--split", choices=["validation", "test"], default="test")
    parser.add_argument(
        "--checkpoint",
        choices=["last", "best"],  # rosa.runs.CHECKPOINT_NAMES
        default="last",
        help="the final adapter (last) or the best one kept by train.keep_best (best)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N (unique-prompt) examples")
    parser.add_argument("--batch-size", type=int, help="default: the run's eval.batch_size")
    parser.add_argument("--force", action="store_true", help="re-evaluate runs that already have metrics")
    parser.add_argument("--num-beams", type=int, help="default: the dataset's (E2E 5, others 1)")
    parser.add_argument("--max-new-tokens", type=int, help="default: the dataset's")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's device setting)")
    parser.add_argument("--no-merge", action="store_true", help="generate with the adapter unmerged")
    parser.add_argument("--generate", action="store_true", help="ELI5: also generate answers and score ROUGE-L")
    parser.add_argument(
        "--export-merged",
        metavar="DIR",
        help="instead of evaluating: save the run's merged model "
        "as a standard HF checkpoint in DIR (bf16; loads with AutoModelForCausalLM)",
    )
    args = parser.parse_args(argv)
    for name in ("limit", "batch_size", "num_beams", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.exit(2, f"error: --{name.replace('_', '-')}={value}; allowed: an integer >= 1\n")

    from pathlib import Path

    from rosa.evaluation.tree import evaluate_tree, export_merged

    if args.export_merged:
        return export_merged(Path(args.path), Path(args.export_merged), device=args.device, checkpoint=args.checkpoint)
    return evaluate_tree(
        Path(args.path),
        split=args.split,
        checkpoint=args.checkpoint,
        limit=args.limit,
        batch_size=args.batch_size,
        force=args.force,
        device=args.device,
        merge=False if args.no_merge else None,
        generate_lm=args.generate,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
    )


if __name__ == "__main__":
    sys.exit(main())
