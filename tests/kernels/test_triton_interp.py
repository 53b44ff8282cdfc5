"""Runs the Triton kernel tests (interp_cases.py) on CPU through the Triton interpreter, in a
subprocess with TRITON_INTERPRET=1 so that the rest of the suite is unaffected."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not importable")
def test_triton_kernels_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            str(Path(__file__).with_name("interp_cases.py")),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"interpreter tests failed:\n{tail}"
    assert " passed" in proc.stdout and " skipped" not in proc.stdout.splitlines()[-1], tail


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not importable")
@pytest.mark.parametrize("dt", ["bf16", "fp16"])
def test_triton_kernels_compile_for_sm90(dt, tmp_path, monkeypatch):
    """Ahead-of-time compile (no GPU needed) to catch errors the interpreter does not see (bf16)."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    import triton.backends
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    if "nvidia" not in getattr(triton.backends, "backends", {}):
        pytest.skip("triton has no nvidia backend")
    from rosa.kernels import triton_ops as T

    i32 = "i32"
    spmm_sig = dict(
        vals_ptr="*fp32",
        offs_ptr="*i32",
        cols_ptr="*i16",
        order_ptr="*i32",
        src_ptr="*" + dt,
        out_ptr="*" + dt,
        T=i32,
        stride_src_k=i32,
        stride_src_t=i32,
        stride_out_t=i32,
        stride_out_r=i32,
        BLOCK_T="constexpr",
        BLOCK_NZ="constexpr",
    )
    sddmm_sig = dict(
        blk_row_ptr="*i32",
        blk_start_ptr="*i32",
        offs_ptr="*i32",
        cols_ptr="*i32",
        a_ptr="*" + dt,
        b_ptr="*" + dt,
        out_ptr="*fp32",
        T=i32,
        stride_a_r=i32,
        stride_a_t=i32,
        stride_b_k=i32,
        stride_b_t=i32,
        BLOCK_T="constexpr",
        BLOCK_NZ="constexpr",
    )
    target = GPUTarget("cuda", 90, 32)
    for fn, sig, bt in ((T._spmm_kernel, spmm_sig, 128), (T._sddmm_kernel, sddmm_sig, 64)):
        k = compile(ASTSource(fn=fn, signature=sig, constexprs={"BLOCK_T": bt, "BLOCK_NZ": 32}), target=target)
        assert "ptx" in k.asm
