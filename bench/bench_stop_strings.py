"""Stop strings: transformers' StopStringCriteria (``generate(stop_strings=..., tokenizer=...)``, what
rosa.evaluation.generate uses) against the hand-written criterion it replaced (``StopOnStrings`` below:
decodes the last few generated tokens of each row). Identical outputs? Which is faster? Same prompts,
model and greedy decoding, interleaved rounds, fastest of each kept.

    python bench/bench_stop_strings.py [--model tiny|smollm2-135m] [--rows 96] [--threads 1] [--record]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class StopOnStrings:
    """The criterion rosa.evaluation.generate used before: per row, True once the generated part
    (after ``prompt_width`` columns) holds a stop string.

    Only the last ``window`` generated tokens are decoded at each step (a stop string cannot hide
    in fewer tokens than it has bytes / 4), so the check costs the same at every step."""

    def __init__(self, tokenizer, stop_strings: list[str], prompt_width: int):
        self.tokenizer, self.stops, self.prompt_width = tokenizer, [s for s in stop_strings if s], prompt_width
        self.window = 4 * max((len(s.encode()) for s in self.stops), default=1) + 4

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated = input_ids[:, self.prompt_width :]
        if not self.stops or generated.shape[1] == 0:
            return done
        tails = self.tokenizer.batch_decode(generated[:, -self.window :].tolist(), skip_special_tokens=True)
        for row, text in enumerate(tails):
            done[row] = any(s in text for s in self.stops)
        return done


def main() -> int:
    from transformers import StoppingCriteriaList

    from rosa.config import compose, validate
    from rosa.data import eval_examples, get_spec, load_examples
    from rosa.evaluation import generate as generation
    from rosa.models import load_model, load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--dataset", default="e2e")
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = get_spec(args.dataset)
    run = validate(
        compose([f"dataset={args.dataset}", f"dataset.sample_rows={{test: {args.rows}}}", f"model.name={args.model}"])
    )
    examples, _ = load_examples(run.dataset, "test")
    prompts = [e.prompt for e in eval_examples(spec, examples)][: args.rows]
    tokenizer = load_tokenizer(run.model)
    model = load_model(run.model, tokenizer).eval()

    def hand_written(**kwargs):  # generate() with StopOnStrings instead of transformers' stop_strings
        real = model.generate

        def patched(input_ids, stop_strings=None, tokenizer=None, **rest):
            stops = StoppingCriteriaList([StopOnStrings(tokenizer, stop_strings or [], input_ids.shape[1])])
            return real(input_ids=input_ids, stopping_criteria=stops, **rest)

        model.generate = patched
        try:
            return generation.generate(model, tokenizer, prompts, **kwargs)
        finally:
            del model.generate

    settings = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, stop_strings=spec.stop_strings)
    runs = {
        "ours (StopOnStrings)": lambda: hand_written(**settings),
        "transformers (StopStringCriteria)": lambda: generation.generate(model, tokenizer, prompts, **settings),
    }
    results = {}
    for _ in range(args.rounds):
        for name, run in runs.items():
            result = run()
            if name not in results or result.seconds < results[name].seconds:
                results[name] = result
    print(
        f"{args.model}, {len(prompts)} {args.dataset} sample prompts, greedy, stops {spec.stop_strings!r}, "
        f"batch {args.batch_size}, {args.threads} thread(s), fastest of {args.rounds} interleaved rounds"
    )
    for name, r in results.items():
        print(f"{name:>36}: {r.seconds:.2f} s, {r.new_tokens} new tokens")
    (a, b) = results.values()
    differing = sum(x != y for x, y in zip(a.texts, b.texts))
    print(
        f"outputs identical: {differing == 0} ({differing} of {len(a.texts)} differ); "
        f"transformers / ours time: {b.seconds / a.seconds:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import recording

    with recording("stop-strings"):
        sys.exit(main())
