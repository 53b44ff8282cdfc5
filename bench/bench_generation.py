"""Generation throughput: batched + KV-cached decoding versus one prompt at a time (not a test).

    python bench/bench_generation.py [--model smollm2-135m|tiny] [--prompts 32] [--batch-size 32] [--threads 1]

smollm2-135m (default): the real SmolLM2-135M on the real ViGGO test split (../shared/data/viggo,
one prompt per unique meaning representation, as evaluation uses), greedy, the generation length
evaluation would use (``max_new_tokens_from_data``), stopping at EOS. tiny: the built-in model on the
E2E sample test split with the E2E stop string. Both go through ``rosa.evaluation.generate`` (left
padding, transformers' ``generate`` with its ``stop_strings``). The settings are interleaved: each of
``--repeat`` rounds runs every setting once, in an order rotated each round, and each setting's
fastest round counts (a shared machine adds noise, never speed). Prints tokens/s per setting, checks
that the outputs are identical, and prints the speed-up (target: >= 8x). Recorded as section
``generation-<model>``.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rosa.config import compose, validate  # noqa: E402
from rosa.data import eval_examples, get_spec, load_examples  # noqa: E402
from rosa.evaluation.generate import generate  # noqa: E402
from rosa.evaluation.runner import max_new_tokens_from_data  # noqa: E402
from rosa.models import load_model, load_tokenizer  # noqa: E402

SETUPS = {
    "smollm2-135m": [
        "model=smollm2-135m",
        "dataset=viggo",
        "dataset.source=local",
        f"dataset.path={ROOT.parent / 'shared' / 'data' / 'viggo'}",
    ],
    "tiny": ["dataset=e2e", "dataset.sample_rows={test: 120}"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SETUPS), default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=32, help="unique test prompts to continue")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's choice)")
    parser.add_argument("--repeat", type=int, default=2, help="time each setting N times, keep the fastest")
    parser.add_argument("--no-cache-baseline", action="store_true", help="also time batch 1 without the KV cache")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    run = validate(compose(SETUPS[args.model]))
    spec = get_spec(run.dataset.name)
    examples, _ = load_examples(run.dataset, "test")
    unique = eval_examples(spec, examples)[: args.prompts]
    prompts = [e.prompt for e in unique]
    tokenizer = load_tokenizer(run.model)
    model = load_model(run.model, tokenizer).eval()
    max_new = max_new_tokens_from_data(tokenizer, unique, spec.max_new_tokens)
    settings = dict(max_new_tokens=max_new, stop_strings=spec.stop_strings, num_beams=1)
    print(
        f"{args.model}, {len(prompts)} unique {spec.name} test prompts, greedy, {max_new} new tokens max "
        f"(from the data), {torch.get_num_threads()} thread(s); settings interleaved over {args.repeat} rounds "
        f"(order rotated each round), the fastest round of each counts"
    )

    generate(model, tokenizer, prompts[:2], batch_size=2, **settings)  # warm-up
    runs = {
        f"batch {args.batch_size} + KV cache": dict(batch_size=args.batch_size),
        "batch 1 + KV cache": dict(batch_size=1),
    }
    if args.no_cache_baseline:
        runs["batch 1, no cache"] = dict(batch_size=1, use_cache=False)
    names = list(runs)
    tries = {name: [] for name in names}
    for r in range(args.repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            tries[name].append(generate(model, tokenizer, prompts, **settings, **runs[name]))
    results = {}
    for name in names:
        results[name] = result = min(tries[name], key=lambda r: r.seconds)
        assert all(t.texts == result.texts for t in tries[name])  # greedy: every round the same text
        print(
            f"{name:>24}: {result.new_tokens} tokens in {result.seconds:.2f} s = {result.tokens_per_s:,.1f} tokens/s",
            flush=True,
        )
    batched, single = results[f"batch {args.batch_size} + KV cache"], results["batch 1 + KV cache"]
    differ = [i for i, (a, b) in enumerate(zip(batched.texts, single.texts)) if a != b]
    ratio = batched.tokens_per_s / single.tokens_per_s
    print(
        f"outputs identical: {not differ} ({len(prompts) - len(differ)}/{len(prompts)} prompts); "
        f"speed-up batched vs batch 1: {ratio:.1f}x (target >= 8x)"
    )
    for i in differ[:3]:
        print(f"  differs: {prompts[i][-60:]!r}\n    batched {batched.texts[i]!r}\n    single  {single.texts[i]!r}")
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import recording  # --record: write this output into docs/benchmarks.md

    model = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else "smollm2-135m"
    with recording(f"generation-{model}"):
        code = main()
    sys.exit(code)
