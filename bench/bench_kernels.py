"""Benchmark RoSA's sparse adapter kernels: forward + backward of y = x @ S^T.

For Llama-2-7B shapes (4096x4096, 4096x11008 = out x in), tokens T and densities d, times
(median of reps, after warm-up) forward+backward of:

  dense      baseline: y = x @ W^T with grads to x and W (a trainable dense layer of the same shape)
  torch      sparse_linear(impl="torch")       grads to x and values
  triton     sparse_linear(impl="triton")      (CUDA only)
  dense-S    sparse_linear(impl="dense")       S materialised, dense matmuls (not in CPU --quick)
  sp.mm      torch.sparse.mm(csr_tensor(values), x^T)^T with autograd (PyTorch baseline)
  W0+S       dense_plus_sparse_linear, W0 frozen (RoSA's default sp_add path): grads to x, values

and prints each time with its ratio to the dense baseline of the same row. The cases of a row (dense
included) are interleaved: each round times every case once, in an order rotated each round, so a
change of the machine's load hits them alike. An exception from one of our kernels (torch, triton,
dense-S, W0+S) stops the script (a failure, never a blank cell); only PyTorch's own sp.mm baseline may
be "n/a", when torch says it does not implement that dtype / device, with torch's reason printed.

    python bench/bench_kernels.py --device cpu --quick
    python bench/bench_kernels.py --device cuda            # bf16, T in {512, 2048}
    python bench/bench_kernels.py --device cuda --check-bf16   # Triton in bf16 vs an fp32 dense reference
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rosa.kernels import CSRMatrix, dense_plus_sparse_linear, sparse_linear, triton_available  # noqa: E402

SHAPES = [(4096, 4096), (4096, 11008)]
DENSITIES = [0.0015, 0.006, 0.018]


def random_mask(n, m, density, device, gen):
    # exactly int(d*n*m) nonzeros, uniformly placed (as a top-k over random scores)
    k = int(density * n * m)
    idx = torch.randperm(n * m, generator=gen)[:k]
    mask = torch.zeros(n * m, dtype=torch.bool)
    mask[idx] = True
    return mask.view(n, m).to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def unsupported_baseline(kind: str, err: Exception) -> str | None:
    """Why PyTorch's sp.mm baseline does not apply here (torch lacks it for this dtype / device), else
    None. Only that baseline may be missing: any other case's exception is a bug and propagates."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    lacking = isinstance(err, NotImplementedError) or any(
        w in text.lower() for w in ("not implemented", "not supported")
    )
    return f"{type(err).__name__}: {text}"[:200] if kind == "sp.mm" and lacking else None


def measure_row(steps: dict, device, warmup: int, reps: int) -> tuple[dict[str, float], dict[str, str]]:
    """Median ms per case over ``reps`` interleaved rounds (each round runs every case once, the order
    rotated by one each round), after ``warmup`` calls of each. Returns (times, not applicable: case ->
    reason); a case is not applicable only as ``unsupported_baseline`` says, any other exception is raised."""
    live, skipped = [], {}
    for kind, fn in steps.items():
        try:
            for _ in range(warmup):
                fn()
        except Exception as err:
            reason = unsupported_baseline(kind, err)
            if reason is None:
                raise
            skipped[kind] = reason
        else:
            live.append(kind)
    times = {kind: [] for kind in live}
    for r in range(reps):
        for kind in live[r % len(live) :] + live[: r % len(live)]:
            sync(device)
            t0 = time.perf_counter()
            steps[kind]()
            sync(device)
            times[kind].append(time.perf_counter() - t0)
    return {kind: statistics.median(t) * 1e3 for kind, t in times.items()}, skipped


BF16_TOL = 2e-2  # max |triton - reference| / max |reference|: bf16 rounding of inputs and outputs


def check_bf16(device, shapes, densities, T: int, gen, dtype=torch.bfloat16) -> bool:
    """Triton SpMM (x S^T), transposed SpMM (g S), SDDMM ((g^T x) at the mask) and sparse_linear's
    gradients, all on bf16 inputs, against the same products computed densely in fp32 from the
    same bf16 values (S materialised). Prints one row per case; True when every error is within
    ``BF16_TOL`` of the reference's largest entry. (``dtype``: fp32 for the CPU interpreter test.)"""
    from rosa.kernels import sddmm, spmm, spmm_t

    print(
        f"# Triton {str(dtype)[6:]} vs fp32 dense reference, T={T}; error = max |out - ref| / max |ref| (pass <= {BF16_TOL})"
    )
    cols = ["shape", "density", "nnz", "spmm", "spmm_t", "sddmm", "dx", "dvalues"]
    widths = [11, 7, 8, 9, 9, 9, 9, 9]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    ok = True
    for n, m in shapes:
        x = torch.randn(T, m, generator=gen).to(device, dtype)
        g = torch.randn(T, n, generator=gen).to(device, dtype)
        for d in densities:
            csr = CSRMatrix.from_mask(random_mask(n, m, d, device, gen))
            v = (torch.randn(csr.nnz, generator=gen) * 0.02).to(device, dtype)
            S = csr.to_dense(v.float())
            xf, gf = x.float(), g.float()
            xg = x.clone().requires_grad_(True)
            vg = v.clone().requires_grad_(True)
            sparse_linear(xg, vg, csr, impl="triton").backward(g)
            pairs = [
                (spmm(v, csr, x, impl="triton"), xf @ S.t()),
                (spmm_t(v, csr, g, impl="triton"), gf @ S),
                (sddmm(csr, g, x, impl="triton"), (gf.t() @ xf).view(-1)[csr.flat_indices()]),
                (xg.grad, gf @ S),
                (vg.grad, (gf.t() @ xf).view(-1)[csr.flat_indices()]),
            ]
            errs = [((out.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item() for out, ref in pairs]
            ok &= all(e <= BF16_TOL for e in errs)
            row = [f"{n}x{m}", f"{d:.2%}", str(csr.nnz)] + [f"{e:9.2e}" for e in errs]
            print("  ".join(c.rjust(w) for c, w in zip(row, widths)), flush=True)
    print(f"# {str(dtype)[6:]} Triton correctness: {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="fewer reps / tokens (CPU: ~1-2 min)")
    ap.add_argument(
        "--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="default: bf16 on cuda, fp32 on cpu"
    )
    ap.add_argument("--tokens", type=int, nargs="*", default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--densities", type=float, nargs="*", default=DENSITIES, help="fractions, e.g. 0.001 0.006")
    ap.add_argument(
        "--check-bf16",
        action="store_true",
        help="instead of timing: Triton's bf16 results against a dense fp32 reference (exit 1 on a miss)",
    )
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.check_bf16:
        if not triton_available() or device.type != "cuda":
            sys.exit("--check-bf16 needs triton and --device cuda")
        tokens = args.tokens or [512]
        return 0 if check_bf16(device, SHAPES, args.densities, tokens[0], torch.Generator().manual_seed(0)) else 1
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    ]
    gpu = device.type == "cuda"
    tokens = args.tokens or ([512] if (args.quick or not gpu) else [512, 2048])
    reps = args.reps or ((10 if args.quick else 30) if gpu else (2 if args.quick else 5))
    warmup = 3 if gpu else 1
    impls = ["torch"] + (["triton"] if gpu and triton_available() else []) + ["dense-S", "sp.mm", "W0+S"]
    if args.quick and not gpu:
        impls.remove("dense-S")  # always >= the dense baseline; the slowest column on CPU
    warnings.filterwarnings("ignore", message=".*[Ss]parse.*")

    dev_name = torch.cuda.get_device_name(device) if gpu else f"cpu x{torch.get_num_threads()} threads"
    print(
        f"# sparse_linear fwd+bwd, {dev_name}, {str(dtype).replace('torch.', '')}; per row, the cases "
        f"(dense included) interleaved over {reps} rounds after {warmup} warm-up call(s) each; "
        f"median ms (ratio to the row's dense x@W^T fwd+bwd)"
    )
    if "dense-S" not in impls:
        print("# dense-S not run (--quick on CPU): it does the dense column's matmuls plus materialising S")
    if "triton" not in impls:
        print(f"# triton not run: {'triton is not importable' if gpu else 'its kernels run on CUDA only'}")
    cols = ["shape", "T", "density", "nnz", "dense"] + impls
    widths = [11, 5, 7, 8, 9] + [16] * len(impls)
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    gen = torch.Generator().manual_seed(0)
    t_start = time.time()
    not_applicable = {}
    for n, m in SHAPES:
        for T in tokens:
            x = torch.randn(T, m, generator=gen).to(device, dtype).requires_grad_(True)
            W = (torch.randn(n, m, generator=gen) * 0.02).to(device, dtype)
            Wt = W.clone().requires_grad_(True)
            gy = torch.randn(T, n, generator=gen).to(device, dtype)

            def dense_step():
                x.grad = Wt.grad = None
                (x @ Wt.t()).backward(gy)

            for d in args.densities:
                mask = random_mask(n, m, d, device, gen)
                csr = CSRMatrix.from_mask(mask)
                v = (torch.randn(csr.nnz, generator=gen) * 0.01).to(device, dtype).requires_grad_(True)
                crow = csr.row_offsets.long()
                colx = csr.col_indices.long()

                def step(kind, v=v, csr=csr):  # bound now: the loop deletes them at its end
                    x.grad = v.grad = None
                    if kind in ("torch", "triton", "dense-S"):
                        y = sparse_linear(x, v, csr, impl="dense" if kind == "dense-S" else kind)
                    elif kind == "sp.mm":
                        S = torch.sparse_csr_tensor(crow, colx, v, (n, m))
                        y = torch.sparse.mm(S, x.t()).t()
                    else:
                        y = dense_plus_sparse_linear(x, W, v, csr)
                    y.backward(gy)

                steps = {"dense": dense_step, **{kind: (lambda k=kind: step(k)) for kind in impls}}
                times, skipped = measure_row(steps, device, warmup, reps)
                not_applicable.update(skipped)
                t_dense = times["dense"]
                row = [f"{n}x{m}", str(T), f"{d:.2%}", str(csr.nnz), f"{t_dense:9.1f}"]
                row += [f"{times[k]:8.1f} ({times[k] / t_dense:4.2f}x)" if k in times else "n/a" for k in impls]
                print("  ".join(c.rjust(w) for c, w in zip(row, widths)), flush=True)
                del mask, csr, v
    for kind, reason in not_applicable.items():
        print(f"# {kind} n/a (not applicable: PyTorch's baseline lacks it here): {reason}")
    print(f"# total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import recording  # --record: write this output into docs/benchmarks.md

    with recording("kernels-bf16-check" if "--check-bf16" in sys.argv else "kernels"):
        code = main()
    sys.exit(code)
