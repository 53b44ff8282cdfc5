"""The GPU suite (``bash bench/gpu_suite.sh``): every figure that needs a CUDA GPU, in one command
under a time budget (default 450 s; the suite has not been run on a GPU yet, so how long it really
takes is unknown: its report prints the total), written into the ``gpu-suite`` section of
docs/benchmarks.md and into docs/gpu-suite.json. The parts run one after another.

Parts, each a subprocess with its own timeout (cut to what is left of the budget; a part that
fails or times out is reported as such and the others still run):

  memory       bench_gpu_memory.py: peak memory and step time at Llama-2-7B's shapes (random bf16
               weights, 1 x 512 tokens, AdamW): lora r16, rosa-robust r16 d0.6%, spa d0.6%, fft
               (where it fits), one subprocess per method; max_memory_allocated and
               max_memory_reserved, the reserved peak compared with the RoSA paper's 20.6 / 20.7 /
               20.3 GB (LoRA / RoSA / SpA). Only fft may run out of memory: an out-of-memory of any
               other method makes the part fail.
  triton-bf16  bench_kernels.py --check-bf16: Triton SpMM / transposed SpMM / SDDMM and the
               autograd gradients in bf16 against a dense fp32 reference
  kernels      bench_kernels.py: fwd+bwd time of Triton vs torch (cuSPARSE) vs torch.sparse.mm vs
               the dense W0+S path, Llama-2-7B shapes, densities 0.1-1%, bf16, 512 tokens; an
               exception in a kernel (Triton's included) fails the script and so the part
  nf4          bench_nf4.py --arch llama7b --eval-only: evaluation forward on a 4-bit base with
               LoRA unmerged vs merged into bf16 weights (time, memory, logits difference)

``--dry-run`` builds every part's setup on the ``meta`` device (no memory, no CUDA): the model with
each method's adapters, the kernel shapes and nonzero counts, the NF4-quantised model merged and
unmerged; prints the plan and exits 0 without writing anything. Without CUDA and without
``--dry-run`` it exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

SECTION = "gpu-suite"
DOC = ROOT / "docs" / "benchmarks.md"
JSON_OUT = ROOT / "docs" / "gpu-suite.json"
COMMAND = "bash bench/gpu_suite.sh"
BUDGET_S = 450
METHODS = ["lora", "rosa-robust", "spa", "fft"]
DENSITIES = ["0.001", "0.003", "0.006", "0.01"]
TOKENS = 512
MEMORY_STEPS = 5
METHOD_TIMEOUT_S = 90
MIN_PART_S = 20  # a part with less than this left of the budget is skipped
REFUSAL = "gpu_suite: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine, or use --dry-run"

# name -> (timeout s, argv after the interpreter, title); "memory" runs one subprocess per method
PARTS = {
    "memory": (
        240,
        ["bench/bench_gpu_memory.py", "--steps", str(MEMORY_STEPS)],
        "Peak memory and step time, Llama-2-7B shapes, bf16, 1 x 512 tokens",
    ),
    "triton-bf16": (
        75,
        [
            "bench/bench_kernels.py",
            "--device",
            "cuda",
            "--check-bf16",
            "--tokens",
            str(TOKENS),
            "--densities",
            *DENSITIES,
        ],
        "Triton kernels in bf16 against a dense fp32 reference",
    ),
    "kernels": (
        100,
        [
            "bench/bench_kernels.py",
            "--device",
            "cuda",
            "--dtype",
            "bf16",
            "--tokens",
            str(TOKENS),
            "--reps",
            "10",
            "--densities",
            *DENSITIES,
        ],
        "Sparse kernels fwd+bwd: Triton vs torch vs torch.sparse.mm vs dense W0+S",
    ),
    "nf4": (
        150,
        [
            "bench/bench_nf4.py",
            "--device",
            "cuda",
            "--arch",
            "llama7b",
            "--batch",
            "1",
            "--seq",
            str(TOKENS),
            "--eval-only",
        ],
        "NF4 base: evaluation with LoRA unmerged vs merged",
    ),
}


def shown(argv: list[str]) -> str:
    return "python " + " ".join(shlex.quote(a) for a in argv)


# ----------------------------------------------------------------------------- running the parts
def run_command(argv: list[str], timeout: float) -> dict:
    """One part as a subprocess of this interpreter, from the repository root."""
    started = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        text = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        return {"status": f"timeout after {timeout:.0f} s", "seconds": time.perf_counter() - started, "output": text}
    status = "ok" if out.returncode == 0 else f"failed (rc {out.returncode})"
    text = out.stdout
    if out.returncode:
        text += "\n" + "\n".join(out.stderr.strip().splitlines()[-5:])
    return {"status": status, "seconds": time.perf_counter() - started, "output": text}


def run_memory(deadline: float) -> dict:
    """bench_gpu_memory's methods, each in its own subprocess with its own timeout."""
    import bench_gpu_memory as memory
    import torch

    started = time.perf_counter()
    rows = []
    for name in METHODS:
        left = deadline - time.perf_counter()
        if left < MIN_PART_S:
            rows.append({"method": name, "status": "skipped (time budget spent)"})
            continue
        rows += memory.run_methods([name], MEMORY_STEPS, dry=False, timeout=min(METHOD_TIMEOUT_S, left))
    name = torch.cuda.get_device_name(0)
    head = (
        f"{name}; Llama-2-7B shapes, random bf16 weights, fp32 trainables, bf16 autocast, micro-batch "
        f"1 x {memory.SEQ}, AdamW; median of {MEMORY_STEPS} steps; methods one after another, each in its "
        f"own process; the paper is compared with torch.cuda.max_memory_reserved"
    )
    ok = all(memory.accepted(r) for r in rows)  # an out-of-memory is accepted for fft only
    return {
        "status": "ok" if ok else "failed",
        "seconds": time.perf_counter() - started,
        "output": "\n".join([head, *memory.table(rows, dry=False)]),
        "rows": rows,
    }


def run_suite(budget: float, parts: list[str]) -> dict:
    start = time.perf_counter()
    deadline = start + budget
    results = {}
    for name in parts:
        timeout, argv, _ = PARTS[name]
        left = deadline - time.perf_counter()
        print(f"gpu_suite: [{name}] {shown(argv)} (timeout {min(timeout, left):.0f} s)", file=sys.stderr, flush=True)
        if left < MIN_PART_S:
            result = {"status": "skipped (time budget spent)", "seconds": 0.0, "output": ""}
        elif name == "memory":
            result = run_memory(min(deadline, time.perf_counter() + timeout))
        else:
            result = run_command(argv, min(timeout, left))
        results[name] = {"command": shown(argv), **result}
        print(f"gpu_suite: [{name}] {result['status']} in {result['seconds']:.0f} s", file=sys.stderr, flush=True)
    return {"total_s": time.perf_counter() - start, "budget_s": budget, "parts": results}


def environment() -> dict:
    import torch

    env = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return env


# ----------------------------------------------------------------------------- the report
def render(report: dict) -> str:
    """Markdown body of the ``gpu-suite`` section (record.section adds command, machine and date)."""
    env = report["env"]
    lines = [
        f"GPU {env.get('gpu', '?')}; torch {env['torch']} (CUDA {env['cuda']}), triton {env['triton']}; "
        f"total {report['total_s']:.0f} s of a {report['budget_s']:.0f} s budget; the parts ran one after "
        f"another, each a subprocess (how each part times its cases, its output says).",
        "",
    ]
    for name, part in report["parts"].items():
        lines += [
            f"**{PARTS[name][2]}** ({name}: {part['status']}, {part['seconds']:.0f} s)  ",
            f"`{part['command']}`",
            "",
            "```",
            part["output"].rstrip() or "(no output)",
            "```",
            "",
        ]
    return "\n".join(lines)


def write_outputs(report: dict, doc: Path, json_path: Path) -> None:
    from record import write

    from rosa.atomic import write_json

    write(SECTION, render(report), command=COMMAND, doc=doc, fenced=False, stamp=report.get("commit"))
    write_json(json_path, report)


# ----------------------------------------------------------------------------- dry run
def dry_run(parts: list[str], budget: float, layers: int) -> int:
    """Every part's setup on 'meta' (nothing allocated, no CUDA), and the plan. ``layers``: decoder
    layers of the models built (Llama-2-7B has 32; fewer only make the dry run quicker)."""
    import torch
    from bench_gpu_memory import LLAMA2_7B

    arch = dict(LLAMA2_7B, num_hidden_layers=layers)
    print(
        f"gpu_suite --dry-run: setup on the 'meta' device (no memory, no CUDA); nothing is written. "
        f"Budget {budget:.0f} s; parts run in this order, each a subprocess with the timeout shown. Models "
        f"built here: Llama-2-7B's shapes with {layers} of its 32 decoder layers."
    )
    for name in parts:
        timeout, argv, title = PARTS[name]
        print(f"\n[{name}] {title}; timeout {timeout} s\n  {shown(argv)}")
        started = time.perf_counter()
        plan = {"memory": plan_memory, "triton-bf16": plan_check, "kernels": plan_kernels, "nf4": plan_nf4}[name]
        plan(torch.device("meta"), arch)
        print(f"  (setup walked in {time.perf_counter() - started:.1f} s)")
    return 0


def plan_memory(meta, arch: dict) -> None:
    import bench_gpu_memory as memory

    print(f"  {memory.meta_shapes()}; one subprocess per method, {METHOD_TIMEOUT_S} s each")
    print(
        f"  {'method':<12} {'trainable':>13} {'static GB':>9} {'paper GB':>8}   "
        f"(static: weights, masks, grads, AdamW moments; activations not included; {arch['num_hidden_layers']} layers)"
    )
    for name in METHODS:
        model, params, _, _ = memory.build(name, arch, meta)
        print(
            f"  {name:<12} {sum(p.numel() for p in params):>13,} {memory.static_bytes(model, params) / 1e9:9.2f} "
            f"{'>' if name == 'fft' else ' '}{memory.PAPER_GB[name]:7.1f}"
        )
        del model, params


def plan_check(meta, arch: dict) -> None:
    from bench_kernels import BF16_TOL

    print_cases()
    print(f"  checks spmm, spmm_t, sddmm and sparse_linear's dx, dvalues: max |err| / max |ref| <= {BF16_TOL}")


def plan_kernels(meta, arch: dict) -> None:
    """The kernel cases, and the torch / dense-S / W0+S paths' forward and backward on 'meta'
    (shapes and dtypes only) at each shape; Triton's kernels cannot run on 'meta'."""
    from types import SimpleNamespace

    import torch
    from bench_gpu_memory import meta_masks
    from bench_kernels import SHAPES

    from rosa.kernels import dense_plus_sparse_linear, sparse_linear

    print_cases()
    for n, m in SHAPES:
        csr = meta_masks({"S": SimpleNamespace(out_features=n, in_features=m)}, 0.006)["S"]
        x = torch.empty(TOKENS, m, device=meta, dtype=torch.bfloat16, requires_grad=True)
        v = torch.empty(csr.nnz, device=meta, dtype=torch.bfloat16, requires_grad=True)
        w = torch.empty(n, m, device=meta, dtype=torch.bfloat16)
        for y in (
            sparse_linear(x, v, csr, impl="torch"),
            sparse_linear(x, v, csr, impl="dense"),
            dense_plus_sparse_linear(x, w, v, csr, impl="torch"),
        ):
            y.backward(torch.empty_like(y))
        print(
            f"  {n}x{m} d=0.6%: torch, dense-S and W0+S forward + backward walked on 'meta' "
            f"(y {tuple(y.shape)}, dx {tuple(x.grad.shape)}, dvalues {tuple(v.grad.shape)})"
        )


def print_cases() -> None:
    from bench_kernels import SHAPES

    from rosa.kernels import triton_available
    from rosa.methods.rosa_robust.masks import nnz_for

    cases = ", ".join(f"{n}x{m} d={float(d):.1%} nnz={nnz_for(float(d), n, m):,}" for n, m in SHAPES for d in DENSITIES)
    print(f"  {TOKENS} tokens, bf16: {cases}")
    print(
        f"  triton {'importable' if triton_available() else 'NOT importable'}; its kernels compile and run on "
        "CUDA only (not in the dry run)"
    )


def plan_nf4(meta, arch: dict) -> None:
    from bench_nf4 import build, llama7b_bytes

    from rosa.models import quantize as q

    method, model = build("lora", True, meta, arch)
    unmerged = q.weight_bytes(model)
    merged = q.weight_bytes(method.merge(model))
    nf4, bf16 = llama7b_bytes()
    print(
        f"  on 'meta', {arch['num_hidden_layers']} layers quantised to NF4, with lora: weights "
        f"{unmerged / 2**30:.2f} GiB unmerged, {merged / 2**30:.2f} GiB merged (bf16); the GPU run uses all 32 "
        f"(analytic: {nf4 / 2**30:.2f} GiB nf4, {bf16 / 2**30:.2f} GiB bf16)"
    )


# ----------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="walk every part's setup on the meta device; write nothing")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole suite")
    ap.add_argument("--parts", nargs="*", choices=list(PARTS), default=list(PARTS))
    ap.add_argument(
        "--dry-layers",
        type=int,
        default=32,
        help="decoder layers built by --dry-run (default 32, Llama-2-7B's; fewer is quicker)",
    )
    ap.add_argument("--doc", type=Path, default=DOC, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=JSON_OUT, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    if args.dry_run:
        return dry_run(args.parts, args.budget, args.dry_layers)
    if not torch.cuda.is_available():
        print(REFUSAL, file=sys.stderr)
        return 2
    from record import commit_stamp

    stamp = commit_stamp()  # the code that runs is the code of this moment
    report = run_suite(args.budget, args.parts)
    report["env"] = environment()
    report["commit"] = stamp
    write_outputs(report, args.doc, args.json)
    failed = [n for n, p in report["parts"].items() if p["status"] != "ok"]
    print(render(report))
    print(
        f"gpu_suite: wrote section '{SECTION}' of {args.doc} and {args.json} in {report['total_s']:.0f} s"
        + (f"; not ok: {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
