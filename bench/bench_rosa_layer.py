"""Forward + backward time and memory of one adapted layer: LoRA, SpA, RoSA (each sparse impl) and
dense masked training, at RoSA's densities. Not a test; prints a table with ratios to LoRA measured in
the same run (repetitions of each case interleaved with LoRA's, so a changing load cancels out).

    python bench/bench_rosa_layer.py --quick              # CPU, about 2-3 minutes on 2 cores
    python bench/bench_rosa_layer.py --device cuda        # every shape, token count and density

Setup per case: a frozen nn.Linear W0 (out x in, no bias), input x [tokens, in] that requires grad (as
inside a network: dX is needed), loss = sum(y * g) for a fixed g. Trainable: LoRA r=16 (A, B);
SpA: S's values; RoSA: r=16 LoRA + S; "masked-dense": a dense n x m delta multiplied by the mask
(y = x (W0 + M * D)^T), the naive way to train a sparse update. Masks are random with exactly
int(d * n * m) entries (RoSA's real masks cluster in rows and columns; the torch path does not care).

Memory: on CUDA the peak allocated during forward + backward above what was allocated before
(so W0 and x are excluded). On CPU, where PyTorch keeps no allocator statistics, the bytes held at
the end of forward by autograd (saved activations) plus the trainable parameters and their
gradients: an estimate that leaves out transient buffers (e.g. the materialised W0 + S of impl=dense).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rosa.kernels import CSRMatrix, triton_available  # noqa: E402
from rosa.methods.lora import LoRALayer  # noqa: E402
from rosa.methods.rosa_robust import RobustLayer  # noqa: E402
from rosa.methods.rosa_robust.masks import nnz_for  # noqa: E402

RANK = 16


class MaskedDense(nn.Module):
    """y = x (W0 + M * D)^T with a dense trainable D: the baseline the sparse kernels avoid."""

    def __init__(self, base: nn.Linear, mask: torch.Tensor):
        super().__init__()
        self.base = base
        self.register_buffer("mask", mask.to(base.weight.dtype))
        self.delta = nn.Parameter(torch.zeros_like(base.weight))

    def forward(self, x):
        return nn.functional.linear(x, self.base.weight + self.mask * self.delta)


def random_mask(n: int, m: int, density: float, generator: torch.Generator) -> torch.Tensor:
    mask = torch.zeros(n * m, dtype=torch.bool)
    mask[torch.randperm(n * m, generator=generator)[: nnz_for(density, n, m)]] = True
    return mask.view(n, m)


def build(kind: str, impl: str | None, base: nn.Linear, mask: torch.Tensor | None, device) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    if kind == "lora":
        layer = LoRALayer(base, RANK, 16.0, 0.0, False, gen)
    elif kind == "masked-dense":
        layer = MaskedDense(base, mask)
    else:
        layer = RobustLayer(base, RANK if kind == "rosa" else 0, 16.0, 0.0, False, gen, impl)
        layer.set_sparse(CSRMatrix.from_mask(mask))
    layer = layer.to(device)
    for name, p in layer.named_parameters():
        if not name.startswith("base."):
            p.data = p.data.float()  # trainable weights in fp32, as the loop's default
            p.requires_grad_(True)
            if p.dim() == 1 or name == "lora_B":
                with torch.no_grad():
                    p.normal_(std=1e-3)  # nonzero so that no path is special-cased
    return layer


def held_bytes(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> int:
    """CPU estimate: autograd's saved tensors at the end of forward + trainable params + grads."""
    skip = {x.untyped_storage().data_ptr()} | {p.untyped_storage().data_ptr() for p in layer.parameters()}
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = t.untyped_storage().data_ptr()
        if key not in seen and key not in skip:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    (y.float() * g).sum().backward()
    params = sum(p.numel() * p.element_size() for p in layer.parameters() if p.requires_grad)
    layer.zero_grad(set_to_none=True)
    x.grad = None
    return total + 2 * params


def step(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
    y = layer(x)
    (y.float() * g).sum().backward()
    layer.zero_grad(set_to_none=True)
    x.grad = None


def timed(layer, x, g, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step(layer, x, g)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def memory(layer: nn.Module, x: torch.Tensor, g: torch.Tensor, device) -> int:
    step(layer, x, g)  # warm-up (kernel compilation, caches)
    if device.type != "cuda":
        return held_bytes(layer, x, g)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(layer, x, g)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def measure(layer: nn.Module, lora: nn.Module, x, g, reps: int, device) -> tuple[float, float]:
    """Median time of ``layer`` and of LoRA, their repetitions interleaved, so that the ratio holds
    on a machine whose load changes during the run."""
    times, lora_times = [], []
    for _ in range(reps):
        times.append(timed(layer, x, g, device))
        lora_times.append(timed(lora, x, g, device))
    return statistics.median(times), statistics.median(lora_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="CPU-sized: one shape, 512 tokens, fewer repetitions")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        default=None,
        help="base weights and inputs (default: bf16 on CUDA, fp32 on CPU)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    shapes = [(4096, 4096)] if args.quick else [(4096, 4096), (4096, 11008)]
    token_counts = [512] if args.quick else [512, 2048]
    densities = [0.0015, 0.006, 0.018]
    reps = args.reps or (3 if args.quick else 10)
    impls = ["torch", "dense"] + (["triton"] if device.type == "cuda" and triton_available() else [])

    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
        f"{dtype}, median of {reps}; memory: {'peak CUDA allocation' if device.type == 'cuda' else 'saved activations + params + grads (estimate)'}"
    )
    print(
        f"{'shape (out x in)':>17} {'tokens':>6} {'density':>7} {'method':<18} {'ms':>9} {'x lora':>7} {'MiB':>9} {'x lora':>7}"
    )
    gen = torch.Generator().manual_seed(0)
    for n, m in shapes:
        base = nn.Linear(m, n, bias=False).to(device, dtype).requires_grad_(False)
        for tokens in token_counts:
            x = torch.randn(tokens, m, device=device, dtype=dtype, requires_grad=True)
            g = torch.randn(tokens, n, device=device)
            lora = build("lora", None, base, None, device)
            lora_mem = memory(lora, x, g, device)
            lora_ms = measure(lora, lora, x, g, reps, device)[0]
            print(
                f"{f'{n} x {m}':>17} {tokens:>6} {'-':>7} {'lora r=16':<18} {1e3 * lora_ms:9.2f} {1.0:7.2f} "
                f"{lora_mem / 2**20:9.1f} {1.0:7.2f}"
            )
            for density in densities:
                mask = random_mask(n, m, density, gen)
                cases = [("spa", i) for i in impls] + [("rosa", i) for i in impls] + [("masked-dense", None)]
                for kind, impl in cases:
                    layer = build(kind, impl, base, mask, device)
                    mem = memory(layer, x, g, device)
                    ms, paired_lora_ms = measure(layer, lora, x, g, reps, device)
                    label = f"{kind}{' r=16' if kind == 'rosa' else ''}{f' {impl}' if impl else ''}"
                    print(
                        f"{'':>17} {'':>6} {100 * density:6.2f}% {label:<18} {1e3 * ms:9.2f} {ms / paired_lora_ms:7.2f} "
                        f"{mem / 2**20:9.1f} {mem / max(lora_mem, 1):7.2f}",
                        flush=True,
                    )
                    del layer
            del x, g


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import recording  # --record: write this output into docs/benchmarks.md

    with recording("rosa-layer"):
        main()
