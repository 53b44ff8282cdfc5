"""Evaluate finished runs: ``python eval.py runs/`` (every run below) or ``python eval.py runs/e2e/lora/<run>``.

Writes ``predictions-<split>.jsonl`` and ``metrics-<split>.json`` into each run folder, logs the metrics
to the run's TensorBoard and prints one line per run; ``--checkpoint best`` evaluates the run's best adapter
(``train.keep_best``) instead, into ``predictions-<split>-best.jsonl`` and ``metrics-<split>-best.json``.
``python eval.py <run> --export-merged DIR`` saves the run's merged model as a standard HF checkpoint instead;
``--lm-eval TASK[,TASK]`` runs lm-evaluation-harness tasks on each run's model instead (``lm_eval-<task>.json``,
the final adapter). Exit status: 0, 1 if any run failed to evaluate,
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
    parser.add_argument(
        "--lm-eval",
        metavar="TASK[,TASK]",
        help="instead of our evaluation: run these lm-evaluation-harness tasks on each run's model "
        "(gsm8k_local: GSM8k from ../shared/data/gsm8k, or any task lm-eval registers); "
        "writes lm_eval-<task>.json",
    )
    parser.add_argument(
        "--lm-eval-limit", type=int, metavar="N", help="lm-eval's limit: the first N documents per task"
    )
    parser.add_argument("--num-fewshot", type=int, metavar="K", help="lm-eval's few-shot count (default: the task's)")
    args = parser.parse_args(argv)
    for name in ("limit", "batch_size", "num_beams", "max_new_tokens", "lm_eval_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.exit(2, f"error: --{name.replace('_', '-')}={value}; allowed: an integer >= 1\n")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        parser.exit(2, f"error: --num-fewshot={args.num_fewshot}; allowed: an integer >= 0\n")
    if args.lm_eval is None:  # an option of the other mode is a mistake, not something to ignore
        wrong = [f"--{n} needs --lm-eval" for n in ("lm_eval_limit", "num_fewshot") if getattr(args, n) is not None]
    else:
        ours = ("limit", "num_beams", "max_new_tokens", "generate", "export_merged")
        wrong = [f"--{n} does not apply to --lm-eval tasks" for n in ours if getattr(args, n)]
        if args.checkpoint != "last":  # lm-eval's results files hold the final adapter's numbers only
            wrong.append("--checkpoint best does not apply to --lm-eval tasks (they evaluate the final adapter)")
    if wrong:
        parser.exit(2, f"error: {wrong[0].replace('_', '-')}\n")

    from pathlib import Path

    from rosa.evaluation.tree import evaluate_tree, export_merged

    if args.export_merged:
        return export_merged(Path(args.path), Path(args.export_merged), device=args.device, checkpoint=args.checkpoint)
    # both evaluations: which model (device, merged or not), how many prompts at once, redo or skip
    common = dict(
        batch_size=args.batch_size, force=args.force, device=args.device, merge=False if args.no_merge else None
    )
    if args.lm_eval is not None:
        from rosa.evaluation.lm_eval import resolve_tasks
        from rosa.schema import ConfigError

        try:
            tasks = resolve_tasks([n.strip() for n in args.lm_eval.split(",")])
        except ConfigError as err:
            parser.exit(2, f"error: {err}\n")
        return evaluate_tree(
            Path(args.path), lm_eval=tasks, limit=args.lm_eval_limit, num_fewshot=args.num_fewshot, **common
        )
    return evaluate_tree(
        Path(args.path),
        split=args.split,
        checkpoint=args.checkpoint,
        limit=args.limit,
        generate_lm=args.generate,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        **common,
    )


if __name__ == "__main__":
    sys.exit(main())
