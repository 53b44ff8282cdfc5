"""The shared prompt prefix (``train.shared_prefix``) on the real model: step time and generation,
plain path against shared path, interleaved in one process.

SmolLM2-135M (fp32, one thread by default), the harness's tokenisation of real training rows (loss
on the target only), micro-batches of 8 in the loop's epoch-0 order (``Batches``, seed 42).

1. **Token-count bound**, per micro-batch over the whole epoch: the positions the plain path
   computes (B x L, padding included) over those the shared path computes (P + B x (L - P)), and
   what packing the suffixes (no padding after the prefix) would give: B x L / (P + sum(len_i - P)).
2. **Training step** (forward, backward, clipping, AdamW at lr 0 so that every round sees the same
   weights and the two paths' losses can be compared) on the first ``--batches`` ViGGO
   micro-batches, for lora (dropout 0) and rosa-orthogonal; each round runs each path once per
   method, order rotated. Reported per batch: time plain / shared against that batch's bound
   (target >= 85% of it), the two losses, and each path's peak RSS (VmHWM, reset before each step).
3. **Generation** of ``--prompts`` ViGGO validation prompts by the untrained model (greedy, the
   dataset's stop strings, the length limit evaluation derives from the data), one case after
   another: batch 1, batch 32 plain, batch 32 shared (target >= 4x batch 1), outputs compared; its
   bound is the prefill's (positions prefilled plain / shared).
4. **The other data sets** (E2E, GSM8k from ../shared/data; SQL from the built-in sample, whose prompt
   is the RoSA paper's): their prefix and bound over the epoch, and lora's step with ``auto`` (what
   the loop does: the plain path under MIN_SHARED_PREFIX tokens) and with the prefix forced, against
   the plain path.

    python bench/bench_shared_prefix.py [--batches 3] [--rounds 2] [--prompts 64] [--threads 1] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
DATA = ROOT.parent / "shared" / "data"
LOCAL = {"viggo": DATA / "viggo", "e2e": DATA / "e2e_nlg", "gsm8k": DATA / "gsm8k", "sql": None}
MICRO = 8


def run_config(dataset: str, method: str = "lora", extra: tuple[str, ...] = ()):
    from rosa.config import compose, validate

    source = ["dataset.source=local", f"dataset.path={LOCAL[dataset]}"] if LOCAL[dataset] else []
    method_keys = {"lora": ["fnmodel.dropout=0"], "rosa-orthogonal": ["fnmodel.resample_every=never"]}[method]
    return validate(
        compose(
            [
                "model=smollm2-135m",
                f"dataset={dataset}",
                *source,
                f"fnmodel={method}",
                *method_keys,
                "device=cpu",
                "precision=fp32",
                *extra,
            ]
        )
    )


def epoch_batches(dataset: str, tokenizer) -> list[dict]:
    """Every training micro-batch of epoch 0, in the loop's order."""
    from rosa.data import build_train_features, get_spec, load_examples
    from rosa.data.batches import Batches

    run = run_config(dataset)
    examples, _ = load_examples(run.dataset, "train")
    features, _ = build_train_features(
        examples, tokenizer, get_spec(dataset), run.dataset.max_length, run.train.loss_on
    )
    batches = Batches(features, MICRO, 1, run.seed, tokenizer.pad_token_id)
    return [batches.step(i)[0] for i in range(batches.steps_per_epoch)]


def bounds(batch: dict, prefix: int) -> tuple[float, float]:
    """(padded bound, packed-suffix bound) of one micro-batch for a prefix of ``prefix`` tokens."""
    rows, width = batch["input_ids"].shape
    lengths = batch["attention_mask"].sum(dim=1)
    plain = rows * width
    return plain / (prefix + rows * (width - prefix)), plain / (prefix + int((lengths - prefix).sum()))


def path_flops(model, batch: dict, prefix: int) -> float:
    """Model FLOPs of one step (bench/flops.py's count) on the path that computes ``prefix`` once:
    linear and sparse products scale with the positions computed (P + B (L - P) of B L), attention
    is the prefix's P x P square plus each suffix's (L - P) x L rectangle, the head is unchanged."""
    from flops import step_flops

    parts = step_flops(model, batch)
    rows, width = batch["input_ids"].shape
    suffix = width - prefix
    positions = (prefix + rows * suffix) / (rows * width)
    attention = (prefix * prefix + rows * suffix * width) / (rows * width * width)
    return (parts["linear"] + parts["sparse"]) * positions + parts["attention"] * attention + parts["head"]


def quantiles(values: list[float]) -> str:
    v = sorted(values)
    pick = lambda q: v[min(int(q * len(v)), len(v) - 1)]
    return (
        f"median {statistics.median(v):.2f} (p10 {pick(0.1):.2f}, p90 {pick(0.9):.2f}, min {v[0]:.2f}, max {v[-1]:.2f})"
    )


def high_water_mib() -> float:
    from bench_real_step import high_water_gib  # VmHWM since the last reset_high_water

    return 1024 * high_water_gib()


class Stepper:
    """One method's model and an AdamW at lr 0 (same compute as training; the weights stay put)."""

    def __init__(self, method: str, dataset: str = "viggo"):
        from rosa.methods import StepContext, build_model

        run = run_config(dataset, method)
        self.model, self.tokenizer, self.method = build_model(
            run,
            torch.device("cpu"),
            {"name": "fp32", "base_dtype": torch.float32, "param_dtype": torch.float32, "autocast": None},
        )
        self.method.before_step(
            StepContext(
                model=self.model,
                step=0,
                phase_step=0,
                epoch=0,
                steps_per_epoch=1,
                total_steps=1,
                micro_batches_per_step=1,
            )
        )
        groups = self.method.param_groups(self.model, run.train)
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = torch.optim.AdamW(self.params, lr=0.0, weight_decay=0.0)

    def step(self, batch: dict, prefix: int) -> tuple[float, float, float]:
        """(seconds, loss, peak RSS MiB) of one training step on ``batch``."""
        from bench_real_step import reset_high_water

        from rosa.models.loss import token_loss_sum

        self.model.train()
        reset_high_water()
        started = time.perf_counter()
        loss_sum, n = token_loss_sum(self.model, batch, prefix_length=prefix)
        loss = loss_sum / max(n, 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started, float(loss.detach()), high_water_mib()


def time_paths(steppers: dict[str, Stepper], batches: list[dict], prefixes: dict[str, callable], rounds: int) -> dict:
    """{(method, batch index, path): [(seconds, loss, peak)]}: per round and batch, every method runs
    every path once, the order of the (method, path) cases rotated each round."""
    cases = [(m, p) for m in steppers for p in prefixes]
    results = {}
    for b, batch in enumerate(batches):
        for m, p in cases:  # warm-up (allocator, AdamW state) outside the timing
            steppers[m].step(batch, prefixes[p](batch)) if b == 0 else None
        for r in range(rounds):
            shift = (r + b) % len(cases)
            for m, p in cases[shift:] + cases[:shift]:
                results.setdefault((m, b, p), []).append(steppers[m].step(batch, prefixes[p](batch)))
    return results


def training(args, steppers, viggo: list[dict]) -> None:
    from flops import matmul_rate

    from rosa.models.shared_prefix import shared_prefix_length

    batches = viggo[: args.batches]
    rate = matmul_rate(steppers["lora"].model, batches[0])
    print(
        f"\nthe core's fp32 torch.mm rate on the model's shapes (bench/flops.py, {torch.get_num_threads()} thread(s)): "
        f"{rate / 1e9:.1f} GFLOP/s"
    )
    print(
        f"\n## 2. training step, ViGGO, first {len(batches)} micro-batches of {MICRO}, {args.rounds} rounds each "
        f"(median), paths and methods interleaved"
    )
    results = time_paths(steppers, batches, {"plain": lambda b: 0, "shared": shared_prefix_length}, args.rounds)
    print(
        f"{'method':<16} {'batch':>5} {'P':>4} {'L':>4} {'bound':>6} {'plain s':>8} {'shared s':>8} {'speed-up':>8} "
        f"{'of bound':>8} {'MFU plain':>9} {'MFU shared':>10} {'loss plain':>11} {'loss shared':>11} {'RSS plain':>10} "
        f"{'RSS shared':>10}"
    )
    for m in steppers:
        fractions, mfu = [], {"plain": [], "shared": []}
        for b, batch in enumerate(batches):
            prefix = shared_prefix_length(batch)
            bound = bounds(batch, prefix)[0]
            plain, shared = results[(m, b, "plain")], results[(m, b, "shared")]
            tp, ts = statistics.median(x[0] for x in plain), statistics.median(x[0] for x in shared)
            fractions.append(tp / ts / bound)
            model = steppers[m].model
            mfu["plain"].append(path_flops(model, batch, 0) / tp / rate)
            mfu["shared"].append(path_flops(model, batch, prefix) / ts / rate)
            print(
                f"{m:<16} {b:>5} {prefix:>4} {batch['input_ids'].shape[1]:>4} {bound:6.2f} {tp:8.2f} {ts:8.2f} "
                f"{tp / ts:7.2f}x {100 * tp / ts / bound:7.0f}% {100 * mfu['plain'][-1]:8.0f}% {100 * mfu['shared'][-1]:9.0f}% "
                f"{plain[0][1]:11.6f} {shared[0][1]:11.6f} {max(x[2] for x in plain):9.0f}M {max(x[2] for x in shared):9.0f}M"
            )
        print(
            f"{m}: speed-up / bound, median over batches {100 * statistics.median(fractions):.0f}% (target >= 85%); "
            f"MFU plain {100 * statistics.median(mfu['plain']):.0f}% -> shared {100 * statistics.median(mfu['shared']):.0f}% "
            "(each path's own model FLOPs, bench/flops.py)"
        )


def generation(args, stepper: Stepper) -> None:
    from rosa.data import eval_examples, get_spec, load_examples
    from rosa.data.features import prompt_ids
    from rosa.evaluation.generate import generate
    from rosa.evaluation.runner import max_new_tokens_from_data
    from rosa.models.shared_prefix import prompts_prefix_length

    spec = get_spec("viggo")
    run = run_config("viggo")
    examples, _ = load_examples(run.dataset, "validation")
    examples = eval_examples(spec, examples)[: args.prompts]
    prompts = [e.prompt for e in examples]
    model, tokenizer = stepper.model, stepper.tokenizer
    max_new = max_new_tokens_from_data(tokenizer, examples, spec.max_new_tokens)  # as evaluation sets it
    ids = prompt_ids(tokenizer, prompts)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    plain_positions = shared_positions = 0
    for start in range(0, len(order), 32):
        rows = [ids[i] for i in order[start : start + 32]]
        width, prefix = max(map(len, rows)), prompts_prefix_length(rows)
        plain_positions += len(rows) * width
        shared_positions += prefix + len(rows) * (max(len(r) - prefix for r in rows))
    settings = dict(max_new_tokens=max_new, stop_strings=list(spec.stop_strings))
    print(
        f"\n## 3. generation, {len(prompts)} ViGGO validation prompts (the untrained model), greedy, at most "
        f"{max_new} new tokens (from the data, as evaluation), the dataset's stop strings, one case after another; "
        f"prefill bound at batch 32: {plain_positions / shared_positions:.2f}x ({plain_positions} / {shared_positions} positions)"
    )
    cases = {
        "batch 1": dict(batch_size=1, shared_prefix=False),
        "batch 32 plain": dict(batch_size=32, shared_prefix=False),
        "batch 32 shared": dict(batch_size=32, shared_prefix=True),
    }
    generate(model, tokenizer, prompts[:2], batch_size=2, max_new_tokens=4)  # warm-up
    out = {name: generate(model, tokenizer, prompts, **kw, **settings) for name, kw in cases.items()}
    for name, result in out.items():
        print(
            f"{name:<16} {result.seconds:7.1f} s {result.new_tokens:6d} tokens {result.tokens_per_s:6.1f} tokens/s "
            f"{out['batch 1'].seconds / result.seconds:5.2f}x batch 1"
        )
    same = sum(a == b for a, b in zip(out["batch 32 shared"].texts, out["batch 32 plain"].texts))
    same_single = sum(a == b for a, b in zip(out["batch 32 shared"].texts, out["batch 1"].texts))
    print(
        f"outputs: shared = plain batch 32 for {same}/{len(prompts)} prompts, = batch 1 for {same_single}/{len(prompts)}; "
        f"shared batch 32 / batch 1: {out['batch 1'].seconds / out['batch 32 shared'].seconds:.2f}x (target >= 4x)"
    )


def other_datasets(args, stepper: Stepper, tokenizer) -> None:
    from rosa.models.shared_prefix import MIN_SHARED_PREFIX, shared_prefix_length

    print(
        f"\n## 4. the other data sets: lora step, first {args.batches} micro-batches, {args.rounds} rounds; auto = "
        f"the loop's choice (plain under {MIN_SHARED_PREFIX} tokens), forced = shared at any common prefix"
    )
    print(
        f"{'dataset':<8} {'P median':>8} {'bound median':>12} {'auto / plain':>12} {'forced / plain':>14} {'loss plain':>11} "
        f"{'loss forced':>11}"
    )
    for dataset in ("sql", "e2e", "gsm8k"):
        batches = epoch_batches(dataset, tokenizer)
        prefixes = [shared_prefix_length(b, minimum=1) for b in batches]
        bound = statistics.median(bounds(b, p)[0] for b, p in zip(batches, prefixes))
        paths = {
            "plain": lambda b: 0,
            "auto": shared_prefix_length,
            "forced": lambda b: shared_prefix_length(b, minimum=1),
        }
        results = time_paths({"lora": stepper}, batches[: args.batches], paths, args.rounds)
        t = {
            p: statistics.median(x[0] for b in range(min(args.batches, len(batches))) for x in results[("lora", b, p)])
            for p in paths
        }
        print(
            f"{dataset:<8} {statistics.median(prefixes):8.0f} {bound:11.2f}x {t['plain'] / t['auto']:11.2f}x "
            f"{t['plain'] / t['forced']:13.2f}x {results[('lora', 0, 'plain')][0][1]:11.6f} "
            f"{results[('lora', 0, 'forced')][0][1]:11.6f}"
        )
    print("(a / b: step time of b over a's, so > 1 is faster; median over batches and rounds)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=3, help="micro-batches timed per data set")
    ap.add_argument("--rounds", type=int, default=2, help="timed steps per batch, path and method")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", nargs="*", default=[], choices=["training", "generation", "datasets"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    print(
        f"SmolLM2-135M, fp32, {args.threads} thread(s), micro-batch {MICRO}, load average {os.getloadavg()[0]:.1f} at start"
    )
    from rosa.models.shared_prefix import shared_prefix_length

    steppers = {"lora": Stepper("lora")}
    tokenizer = steppers["lora"].tokenizer
    viggo = epoch_batches("viggo", tokenizer)
    prefixes = [shared_prefix_length(b) for b in viggo]
    padded = [bounds(b, p)[0] for b, p in zip(viggo, prefixes)]
    packed = [bounds(b, p)[1] for b, p in zip(viggo, prefixes)]
    print(f"\n## 1. token-count bound, ViGGO train, all {len(viggo)} micro-batches of epoch 0")
    print(
        f"prefix P: {quantiles([float(p) for p in prefixes])} tokens; shared in {sum(p > 0 for p in prefixes)} of {len(viggo)}"
    )
    print(f"bound (plain / shared positions, padding included): {quantiles(padded)}")
    print(
        f"with packed suffixes: {quantiles(packed)}; packing would add {100 * (statistics.median(packed) / statistics.median(padded) - 1):.0f}% "
        "to the median bound"
    )
    if "training" not in args.skip:
        steppers["rosa-orthogonal"] = Stepper("rosa-orthogonal")
        training(args, steppers, viggo)
    if "generation" not in args.skip:
        generation(args, steppers["lora"])
    if "datasets" not in args.skip:
        other_datasets(args, steppers["lora"], tokenizer)
    print(f"\ntotal {time.time() - started:.0f} s")


if __name__ == "__main__":
    from record import recording

    with recording("shared-prefix"):
        main()
