"""precision=nf4 benchmark: step time and memory of lora / rosa-robust on a 4-bit versus a bf16 base
(same model, one run), evaluation time merged versus unmerged on the 4-bit base, and Llama-2-7B
weight bytes nf4 vs bf16 (analytic, from shapes). Prints a table.
``--arch llama7b`` uses Llama-2-7B's shapes (random bf16 weights, ``--layers`` of them) instead of
the tiny model; ``--eval-only`` measures only the merged / unmerged evaluation (what the GPU suite
runs, ``bench/gpu_suite.sh``).

Timings are interleaved: the four training cases (lora / rosa-robust on a bf16 / 4-bit base) live in
one process and each round runs one step of each, in an order rotated each round; the evaluation
forwards alternate between the unmerged model and an identical copy merged into bf16. Medians over
the rounds. On CUDA the memory columns are what a step or forward allocates above the memory already
allocated before it (the other cases' models stay resident), plus the weight bytes of each model.

    python bench/bench_nf4.py [--device cpu|cuda] [--steps 3] [--batch 4] [--seq 64]
    python bench/bench_nf4.py --device cuda --arch llama7b --batch 1 --seq 512 --eval-only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rosa.models import quantize as q  # noqa: E402

EVAL_ROUNDS = 10


def llama7b_bytes() -> tuple[int, int]:
    """(nf4, bf16) weight bytes of Llama-2-7B: 32 layers of q,k,v,o 4096x4096 and gate,up 11008x4096,
    down 4096x11008 in NF4; embeddings, head (32000x4096) and norms in bf16."""
    d, f, layers, vocab = 4096, 11008, 32, 32000
    linears = [(d, d)] * 4 + [(f, d), (f, d), (d, f)]
    dense_rest = 2 * vocab * d * 2 + (2 * layers + 1) * d * 2
    nf4 = layers * sum(q.nf4_bytes(s) for s in linears) + dense_rest
    bf16 = layers * sum(a * b * 2 for a, b in linears) + dense_rest
    return nf4, bf16


def base_model(device, arch: dict | None = None):
    """The tiny model, or (``arch``) a random Llama of those shapes built directly in bf16 on ``device``."""
    if arch is not None:
        from bench_gpu_memory import random_llama

        return random_llama(arch, device, torch.bfloat16)
    from rosa.models.tiny import tiny_model, tiny_tokenizer

    torch.manual_seed(0)
    return tiny_model(tiny_tokenizer()).to(torch.bfloat16).to(device)


def build(method_name: str, nf4: bool, device, arch: dict | None = None):
    from rosa.config import compose, validate
    from rosa.methods import get_method

    model = base_model(device, arch)
    for p in model.parameters():
        p.requires_grad_(False)
    if nf4:
        q.quantize_model(model)
    extra = (
        ["fnmodel.rank=8", "fnmodel.density=0.01", "fnmodel.mask_criterion=random"]
        if method_name == "rosa-robust"
        else []
    )
    run = validate(compose([f"fnmodel={method_name}", "precision=bf16", *extra]))
    method = get_method(run.fnmodel, seed=0)
    model = method.prepare(model)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    return method, model.to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def training_case(method, model):
    params = [p for g in method.param_groups(model, argparse.Namespace(lr=1e-4)) for p in g["params"]]
    return model, params, torch.optim.AdamW(params, lr=1e-4)


def train_step(model, params, opt, batch, device) -> None:
    model.train()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        logits = model(input_ids=batch).logits
    loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


@torch.no_grad()
def eval_forward(model, batch, device) -> None:
    model.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        model(input_ids=batch)


def interleaved(cases: dict, rounds: int, device) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds (median) and, on CUDA, MiB allocated above the start (max) of each case's call, over
    ``rounds`` rounds that run every case once in an order rotated each round, after one warm-up call
    of each. ``cases``: name -> a function of no arguments."""
    for fn in cases.values():
        fn()
    names = list(cases)
    seconds, extra = {n: [] for n in names}, {n: 0.0 for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            t0 = time.perf_counter()
            cases[name]()
            sync(device)
            seconds[name].append(time.perf_counter() - t0)
            if device.type == "cuda":
                extra[name] = max(extra[name], (torch.cuda.max_memory_allocated(device) - before) / 2**20)
    return {n: statistics.median(t) for n, t in seconds.items()}, extra


def lora_on_4bit(device, arch, seed: int = 1):
    """lora on the 4-bit base with a non-zero B (as after training), the same values on every call."""
    method, model = build("lora", True, device, arch)
    gen = torch.Generator().manual_seed(seed)
    for layer in model.modules():
        if hasattr(layer, "lora_B"):
            with torch.no_grad():
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.01)
    return method, model


def held_for_backward(device, tokens: int = 512, size: int = 4096, density: float = 0.006) -> tuple[float, float]:
    """MiB that rosa-robust's dense W0+S path holds from forward to backward on one 4-bit size x size
    layer (tokens x size input): tensors autograd saves that are not the layer's own parameters.
    Before: the call as it was (the freshly dequantised bf16 W0 handed in and saved); after: the
    4-bit weight handed in, dequantised again in backward (as RoSA's sp_add)."""
    from rosa.kernels import CSRMatrix, dense_plus_sparse_linear
    from rosa.methods.base import base_weight_for_matmul, dense_weight

    layer = nn.Linear(size, size, bias=False).to(torch.bfloat16).to(device)
    layer.weight.requires_grad_(False)
    q.quantize_model(nn.Sequential(layer))
    csr = CSRMatrix.from_mask((torch.rand(size, size, generator=torch.Generator().manual_seed(0)) < density).to(device))
    values = torch.zeros(csr.nnz, dtype=torch.bfloat16, device=device, requires_grad=True)
    x = torch.randn(tokens, size, dtype=torch.bfloat16, device=device, requires_grad=True)

    def held(weight) -> float:
        saved = {}

        def pack(t):
            if t is not layer.weight:
                saved[id(t)] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = dense_plus_sparse_linear(x, weight, values, csr)
        y.float().sum().backward()
        return sum(saved.values()) / 2**20

    return held(dense_weight(layer)), held(base_weight_for_matmul(layer))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--arch", choices=["tiny", "llama7b"], default="tiny")
    ap.add_argument("--layers", type=int, default=32, help="decoder layers with --arch llama7b")
    ap.add_argument(
        "--eval-only",
        action="store_true",
        help="only merged vs unmerged evaluation (no training steps, no re-quantisation of the merged weights)",
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    arch = None
    if args.arch == "llama7b":
        from bench_gpu_memory import LLAMA2_7B

        arch = dict(LLAMA2_7B, num_hidden_layers=args.layers)
    batch = torch.randint(3, 200, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(device)
    from rosa.methods import METHODS

    methods = ["lora"] + (["rosa-robust"] if "rosa-robust" in METHODS else [])

    what = "tiny Llama" if arch is None else f"Llama-2-7B shapes ({args.layers} layers, random weights)"
    cuda = device.type == "cuda"
    print(
        f"device={device} {what}, batch {args.batch}x{args.seq}, bf16 autocast; timings: the cases of each "
        f"measurement interleaved (one call of each per round, order rotated) after one warm-up call each, "
        f"medians; training {args.steps} rounds, evaluation {EVAL_ROUNDS} rounds"
    )
    if not args.eval_only:
        cases, weights = {}, {}
        for name in methods:
            for nf4 in (False, True):
                key = f"{name:<12} {'nf4' if nf4 else 'bf16':<5}"
                model, params, opt = training_case(*build(name, nf4, device, arch))
                weights[key] = q.weight_bytes(model)
                cases[key] = lambda m=model, p=params, o=opt: train_step(m, p, o, batch, device)
        seconds, extra = interleaved(cases, args.steps, device)
        print(
            f"{'method':<12} {'base':<5} {'step ms':>9} {'step +MiB':>9} {'weight KiB':>11}"
            + ("   (step +MiB: allocated during a step above the start)" if cuda else "   (step +MiB: CUDA only)")
        )
        for key in cases:
            more = f"{extra[key]:9.1f}" if cuda else f"{'-':>9}"
            print(f"{key} {seconds[key] * 1e3:9.1f} {more} {weights[key] / 2**10:11.1f}")
        del cases

    method, model = lora_on_4bit(device, arch)
    print(f"\n4-bit base with lora: weights {q.weight_bytes(model) / 2**20:.1f} MiB")
    _, merged_model = lora_on_4bit(device, arch)  # an identical copy, merged in place
    merged_model = method.merge(merged_model)
    seconds, extra = interleaved(
        {
            "unmerged": lambda: eval_forward(model, batch, device),
            "merged": lambda: eval_forward(merged_model, batch, device),
        },
        EVAL_ROUNDS,
        device,
    )
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        ref = model(input_ids=batch).logits.float()
        out = merged_model(input_ids=batch).logits.float()
    unmerged, merged = seconds["unmerged"], seconds["merged"]
    print(
        f"eval forward (lora, 4-bit base), {EVAL_ROUNDS} interleaved rounds: unmerged {unmerged * 1e3:.1f} ms, "
        f"merged bf16 {merged * 1e3:.1f} ms, speed-up x{unmerged / merged:.2f}"
    )
    if cuda:
        print(
            f"eval memory: weights unmerged {q.weight_bytes(model) / 2**20:.0f} MiB, merged bf16 "
            f"{q.weight_bytes(merged_model) / 2**20:.0f} MiB; a forward allocates above the start: unmerged "
            f"{extra['unmerged']:.0f} MiB, merged {extra['merged']:.0f} MiB"
        )
    print(
        f"merged vs unmerged logits: mean |diff| / mean |logit| = {((out - ref).abs().mean() / ref.abs().mean()).item():.4f}"
    )
    if not args.eval_only:
        # re-quantizing the merged weights (an option): its extra rounding error on the logits
        requant = [m for m in merged_model.modules() if isinstance(m, nn.Linear) and m is not merged_model.lm_head]
        before = {id(m): m.weight.detach().float().clone() for m in requant}
        q.quantize_model(merged_model)
        werr = max(
            ((q.dequantize(m.weight).float() - before[id(m)]).abs().max() / before[id(m)].abs().max()).item()
            for m in requant
        )
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            out_rq = merged_model(input_ids=batch).logits.float()
        print(
            f"re-quantized merged: max weight error / max |w| = {werr:.4f}; "
            f"logits mean |diff| / mean |logit| = {((out_rq - ref).abs().mean() / ref.abs().mean()).item():.4f}"
        )

    before, after = held_for_backward(device)
    print(
        f"\nrosa-robust dense W0+S path on a 4-bit 4096x4096 layer, 512 tokens: held from forward to backward "
        f"{before:.1f} MiB (dequantised W0 saved) -> {after:.1f} MiB (4-bit weight saved, dequantised again); "
        f"over Llama-2-7B's 224 adapted layers the bf16 copies no longer held come to "
        f"{32 * (4 * 4096 * 4096 + 3 * 11008 * 4096) * 2 / 2**30:.1f} GiB"
    )

    nf4, bf16 = llama7b_bytes()
    print(
        f"\nLlama-2-7B weights (analytic): bf16 {bf16 / 2**30:.2f} GiB, nf4 {nf4 / 2**30:.2f} GiB "
        f"(x{bf16 / nf4:.2f} smaller; linear layers at {8 * q.nf4_bytes((4096, 4096)) / (4096 * 4096):.3f} bits/weight)"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import recording  # --record: write this output into docs/benchmarks.md

    with recording("nf4"):
        main()
