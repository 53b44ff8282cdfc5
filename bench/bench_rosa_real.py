"""rosa-orthogonal on the real model (SmolLM2-135M, rank 16, all 210 linear layers), one process:

1. Whole-model resample time: every layer through the SVD (the old path) against the method's path
   (Gram eigendecomposition where the drawn directions are well conditioned, else the SVD), in
   alternating rounds; how many layers took each path.
2. Periodic checkpoints: bytes written and seconds per checkpoint when every tensor is written each
   time (before) against W_fixed written once per sampling and hard-linked into later checkpoints
   (after). Three checkpoints between two resamples, in a temporary folder on the same disk.
3. bf16 drift over repeated resamples of a bf16 copy of the model's first block: max |merged - W| /
   max |W| with W_fixed in bf16 (before) and with the float32 master (after).

    python bench/bench_rosa_real.py [--threads 1] [--rounds 2] [--record]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rosa.methods.rosa_orthogonal as ro  # noqa: E402
from rosa.config import compose, validate  # noqa: E402
from rosa.methods import get_method  # noqa: E402
from rosa.methods.base import adapted_layers  # noqa: E402
from rosa.models import load_model, load_tokenizer  # noqa: E402
from rosa.training import checkpoint as ckpt  # noqa: E402


def build(rank: int):
    run = validate(compose(["model=smollm2-135m", "fnmodel=rosa-orthogonal", f"fnmodel.rank={rank}"]))
    model = load_model(run.model, load_tokenizer(run.model))
    method = get_method(run.fnmodel, seed=0)
    return method, method.prepare(model)


def resample_times(method, model, rounds: int) -> None:
    gram = ro.gram_factors
    paths = {"gram": 0, "svd": 0}

    def counted(*args, **kwargs):
        out = gram(*args, **kwargs)
        paths["gram" if out is not None else "svd"] += 1
        return out

    times = {"svd only (before)": [], "gram where accurate (after)": []}
    step = 1
    for _ in range(rounds):
        for name in times:
            ro.gram_factors = (lambda *a, **k: None) if name.startswith("svd") else counted
            times[name].append(method.resample(model, step))
            step += 1
    ro.gram_factors = gram
    n = len(adapted_layers(model))
    print(
        f"1. one resample of all {n} layers, float32, median of {rounds} rounds (the two paths interleaved: "
        f"each round runs both, in turn):"
    )
    for name, t in times.items():
        print(f"   {name:<28} {statistics.median(t):7.2f} s  (min {min(t):.2f}, max {max(t):.2f})")
    before, after = (statistics.median(t) for t in times.values())
    print(
        f"   speed-up x{before / after:.2f}; over its {rounds} resamples {paths['gram']} layer factorisations took "
        f"the Gram path, {paths['svd']} the SVD (a drawn singular value below 0.03 sigma_max)"
    )


def checkpoint_costs(method, model) -> None:
    tensors = method.state_dict(model)
    once = method.write_once_keys(tensors)
    trainer = {"optimizer": {}, "rng": ckpt.rng_state()}
    print(
        "2. periodic checkpoints between two resamples (3 checkpoints, same tensors, same disk; the two ways "
        "one after another, not interleaved):"
    )
    for label, write_once in (("every tensor each time (before)", None), ("W_fixed once per sampling (after)", once)):
        with tempfile.TemporaryDirectory(dir=ROOT) as run_dir:
            seconds, written, previous = [], [], None
            for step in (10, 20, 30):
                existing = {f.stat().st_ino for f in Path(run_dir).rglob("*") if f.is_file()}
                started = time.perf_counter()
                previous = ckpt.save_checkpoint(
                    Path(run_dir), step, tensors, trainer, {"step": step}, keep=previous, write_once=write_once
                )  # as the loop: the previous one kept
                seconds.append(time.perf_counter() - started)
                written.append(sum(f.stat().st_size for f in previous.iterdir() if f.stat().st_ino not in existing))
            print(
                f"   {label:<34} first {written[0] / 2**20:7.1f} MiB in {seconds[0]:.2f} s; later ones "
                f"{statistics.mean(written[1:]) / 2**20:7.1f} MiB new in {statistics.mean(seconds[1:]):.2f} s"
            )


def bf16_drift(model, resamples: int = 200) -> None:
    block = [m for m in adapted_layers(model).values()][:7]  # the first decoder block's 7 layers
    print(
        f"3. bf16 drift over {resamples} resamples of the first block's {len(block)} layers (no training between; "
        f"errors, not timings):"
    )
    for master in (False, True):
        worst = {}
        for index, layer in enumerate(block):
            base = torch.nn.Linear(layer.in_features, layer.out_features, bias=False).to(torch.bfloat16)
            with torch.no_grad():
                base.weight.copy_(layer.merged_weight().to(torch.bfloat16))
            w0 = base.weight.detach().float().clone()
            bf16_layer = ro.OrthogonalLayer(base, 16, index, False, fp32_master=master)
            for i in range(1, resamples + 1):
                bf16_layer.resample("random-window", "sqrt", ro.subspace_generator(0, i, index))
                if i in (1, resamples):
                    drift = float((bf16_layer.merged_weight().detach() - w0).abs().max() / w0.abs().max())
                    worst[i] = max(worst.get(i, 0.0), drift)
        label = "float32 master (after)" if master else "bf16 W_fixed (before)"
        print(f"   {label:<24} after 1: {worst[1]:.1e}   after {resamples}: {worst[resamples]:.1e}")
    print(f"   bound with the master: {resamples} x 2^-23 = {resamples * 2.0**-23:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    method, model = build(args.rank)
    print(f"SmolLM2-135M, rosa-orthogonal rank {args.rank}, fp32, {args.threads} thread(s)")
    resample_times(method, model, args.rounds)
    checkpoint_costs(method, model)
    bf16_drift(model)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    from record import recording

    with recording("rosa-real"):
        main()
