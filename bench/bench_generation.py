"""Generation throughput: batched + KV-cached decoding versus one prompt at a time (not a test).

    python bench/bench_generation.py [--rows 120] [--batch-size 64] [--max-new-tokens 64] [--threads N]

Tiny built-in model, the E2E sample test split (one prompt per unique MR, as evaluation uses),
greedy decoding with the E2E stop string, one CPU thread unless ``--threads``. Each setting runs
``--repeat`` times and the fastest counts (a shared machine adds noise). Prints tokens/s per
setting, checks that the outputs are identical, and prints the speed-up (target: >= 5x).
About a minute on a CPU.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rosa.config import DatasetConfig  # noqa: E402
from rosa.data import eval_examples, get_spec, load_examples  # noqa: E402
from rosa.evaluation.generate import generate  # noqa: E402
from rosa.models.tiny import tiny_model, tiny_tokenizer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rows", type=int, default=120, help="rows of the E2E sample test split (2-3 per MR)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the tiny model gains nothing from more, and a busy "
                             "machine makes several threads spin; 0 = torch's choice)")
    parser.add_argument("--repeat", type=int, default=2, help="time each setting N times, keep the fastest")
    parser.add_argument("--no-cache-baseline", action="store_true", help="also time batch 1 without the KV cache")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = get_spec("e2e")
    examples, _ = load_examples(DatasetConfig(name="e2e", sample_rows={"test": args.rows}), "test")
    prompts = [e.prompt for e in eval_examples(spec, examples)]
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).eval()
    settings = dict(max_new_tokens=args.max_new_tokens, stop_strings=spec.stop_strings, num_beams=1)
    print(f"{len(prompts)} prompts (unique E2E sample test MRs), greedy, {args.max_new_tokens} new tokens max, "
          f"{torch.get_num_threads()} thread(s)")

    generate(model, tokenizer, prompts[:2], batch_size=2, **settings)  # warm-up
    runs = {f"batch {args.batch_size} + KV cache": dict(batch_size=args.batch_size),
            "batch 1 + KV cache": dict(batch_size=1)}
    if args.no_cache_baseline:
        runs["batch 1, no cache"] = dict(batch_size=1, use_cache=False)
    results = {}
    for name, options in runs.items():
        tries = [generate(model, tokenizer, prompts, **settings, **options) for _ in range(args.repeat)]
        results[name] = result = min(tries, key=lambda r: r.seconds)
        assert all(t.texts == result.texts for t in tries)
        print(f"{name:>24}: {result.new_tokens} tokens in {result.seconds:.2f} s = {result.tokens_per_s:,.0f} tokens/s")
    batched, single = results[f"batch {args.batch_size} + KV cache"], results["batch 1 + KV cache"]
    same = all(r.texts == batched.texts for r in results.values())
    ratio = batched.tokens_per_s / single.tokens_per_s
    print(f"outputs identical: {same}; speed-up batched vs batch 1: {ratio:.1f}x (target >= 5x)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import recording  # --record: write this output into docs/benchmarks.md
    with recording("generation"):
        code = main()
    sys.exit(code)
