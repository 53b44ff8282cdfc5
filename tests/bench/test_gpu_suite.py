"""bench/gpu_suite.sh on a CPU machine: the refusal (exit 2, one line, docs untouched), the dry run on
the meta device, the report writing (only its own marked section of docs/benchmarks.md changes), and
what a part counts as ok: out of memory only for fft, a kernel exception (Triton's) never a blank cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import bench_gpu_memory as memory  # noqa: E402
import bench_kernels as kernels  # noqa: E402
import gpu_suite  # noqa: E402
import record  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
JSON_OUT = REPO / "docs" / "gpu-suite.json"


def outputs() -> tuple[bytes, bytes | None]:
    """docs/benchmarks.md and docs/gpu-suite.json (None when absent), to check they stay untouched."""
    return DOC.read_bytes(), JSON_OUT.read_bytes() if JSON_OUT.exists() else None


def suite(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}  # no GPU, even on a GPU machine
    return subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_suite.sh"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_refuses_without_cuda_in_one_line():
    before = outputs()
    out = suite()
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == [gpu_suite.REFUSAL]
    assert outputs() == before


def test_dry_run_on_meta_plans_every_part_and_method():
    before = outputs()
    out = suite("--dry-run", "--dry-layers", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    for part in gpu_suite.PARTS:
        assert f"[{part}]" in out.stdout
    for method in gpu_suite.METHODS:
        assert f"\n  {method} " in out.stdout
    assert "'meta'" in out.stdout and "nothing is written" in out.stdout
    assert "4096x11008 d=0.6%: torch, dense-S and W0+S forward + backward walked" in out.stdout
    assert "quantised to NF4, with lora" in out.stdout
    assert outputs() == before


def test_replace_section_touches_only_its_markers():
    doc = (
        "# Benchmarks\n\nintro\n\n<!-- bench:other -->\nkeep me\n<!-- /bench:other -->\n\n"
        "<!-- bench:gpu-suite -->\n(not yet run on a GPU)\n<!-- /bench:gpu-suite -->\n\ntail text\n"
    )
    block = "<!-- bench:gpu-suite -->\nnew figures\n<!-- /bench:gpu-suite -->"
    out = record.replace_section(doc, "gpu-suite", block)
    assert out == doc.replace("(not yet run on a GPU)", "new figures")
    assert record.replace_section(out, "gpu-suite", block) == out  # idempotent
    appended = record.replace_section("# Benchmarks\n", "gpu-suite", block)
    assert appended == f"# Benchmarks\n\n## gpu-suite\n\n{block}\n"


def test_suite_runs_parts_under_the_budget_and_writes_its_section(tmp_path, monkeypatch):
    """The driver with stand-in parts (no GPU needed): ok, failed and timed-out parts are all reported,
    the doc's other text is kept byte for byte, and the JSON holds the same results."""
    monkeypatch.setattr(
        gpu_suite,
        "PARTS",
        {
            "kernels": (30, ["-c", "print('kernel table')"], "Kernels"),
            "nf4": (30, ["-c", "import sys; print('half'); sys.exit(3)"], "NF4"),
            "triton-bf16": (1, ["-c", "import time; time.sleep(5)"], "Check"),
        },
    )
    monkeypatch.setattr(gpu_suite, "MIN_PART_S", 0.5)
    report = gpu_suite.run_suite(budget=60, parts=["kernels", "nf4", "triton-bf16"])
    report["env"] = {"date": "today", "torch": "T", "cuda": "C", "triton": "X", "gpu": "G"}
    parts = report["parts"]
    assert parts["kernels"]["status"] == "ok" and parts["kernels"]["output"] == "kernel table\n"
    assert parts["nf4"]["status"] == "failed (rc 3)"
    assert parts["triton-bf16"]["status"] == "timeout after 1 s"

    doc = tmp_path / "benchmarks.md"
    text = (
        "# Benchmarks\n\n<!-- bench:kernels -->\nold kernels\n<!-- /bench:kernels -->\n\n"
        "<!-- bench:gpu-suite -->\n(not yet run on a GPU)\n<!-- /bench:gpu-suite -->\nafter\n"
    )
    doc.write_text(text)
    gpu_suite.write_outputs(report, doc, tmp_path / "gpu-suite.json")
    written = doc.read_text()
    head, _, rest = written.partition("<!-- bench:gpu-suite -->")
    section, _, tail = rest.partition("<!-- /bench:gpu-suite -->")
    assert head == text.partition("<!-- bench:gpu-suite -->")[0] and tail == "\nafter\n"
    assert "Command: `bash bench/gpu_suite.sh`" in section and "kernel table" in section
    assert "(nf4: failed (rc 3)" in section and "timeout after 1 s" in section
    assert "GPU G; torch T (CUDA C), triton X" in section
    assert json.loads((tmp_path / "gpu-suite.json").read_text())["parts"]["nf4"]["status"] == "failed (rc 3)"


def test_parts_past_the_budget_are_skipped(monkeypatch):
    monkeypatch.setattr(gpu_suite, "PARTS", {"kernels": (30, ["-c", "print(1)"], "Kernels")})
    report = gpu_suite.run_suite(budget=0, parts=["kernels"])
    assert report["parts"]["kernels"]["status"] == "skipped (time budget spent)"


# ----------------------------------------------------------------------------- what a part counts as ok
def memory_rows(oom: str | None) -> list[dict]:
    rows = [
        {
            "method": m,
            "status": "ok",
            "trainable": 1,
            "peak_gb": 19.0,
            "reserved_gb": 20.0,
            "device_gb": 20.5,
            "step_s": 1.0,
        }
        for m in gpu_suite.METHODS
    ]
    for r in rows:
        if r["method"] == oom:
            r.update(status="OOM", error="CUDA out of memory. Tried to allocate 1 GiB", step_s=None)
    return rows


@pytest.mark.parametrize(
    "oom, status", [(None, "ok"), ("fft", "ok"), ("lora", "failed"), ("rosa-robust", "failed"), ("spa", "failed")]
)
def test_memory_part_accepts_out_of_memory_for_fft_only(monkeypatch, oom, status):
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "GPU")
    monkeypatch.setattr(
        memory, "run_methods", lambda names, *a, **k: [r for r in memory_rows(oom) if r["method"] in names]
    )
    result = gpu_suite.run_memory(deadline=float("inf"))
    assert result["status"] == status
    assert "compared with torch.cuda.max_memory_reserved" in result["output"]
    if oom:
        line = next(l for l in result["output"].splitlines() if "out of memory" in l)
        assert ("as expected for fft" in line) == (oom == "fft") and ("FAILURE" in line) == (oom != "fft")


def test_memory_table_reports_reserved_beside_allocated_and_compares_reserved():
    rows = memory_rows(None)
    rows[0].update(peak_gb=18.0, reserved_gb=21.63)  # lora: allocated below the paper's 20.6, reserved above
    lines = memory.table(rows, dry=False)
    assert lines[0].split()[3:6] == ["alloc", "GB", "reserved"]
    assert "lora         ok                 1    18.00    21.63    20.50     20.6     1.05" in lines[1]
    assert "lora: reserved 21.63 GB vs paper 20.6 GB: MISSED" in lines


def test_a_kernel_exception_propagates_triton_included():
    def fails():
        raise RuntimeError("triton: out of resources: shared memory")

    with pytest.raises(RuntimeError, match="out of resources"):
        kernels.measure_row({"dense": lambda: None, "triton": fails}, kernels.torch.device("cpu"), 1, 2)
    for kind in ("torch", "dense-S", "W0+S"):  # ours: never "n/a", even for a "not implemented" message

        def missing():
            raise NotImplementedError("not implemented for 'BFloat16'")

        with pytest.raises(NotImplementedError):
            kernels.measure_row({kind: missing}, kernels.torch.device("cpu"), 1, 2)


def test_only_torchs_own_baseline_may_be_not_applicable_with_its_reason():
    cpu = kernels.torch.device("cpu")

    def unsupported():
        raise RuntimeError("\"addmm_sparse_csr\" not implemented for 'BFloat16'")

    def crashes():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    times, skipped = kernels.measure_row({"dense": lambda: None, "sp.mm": unsupported}, cpu, 1, 2)
    assert list(times) == ["dense"]
    assert skipped == {"sp.mm": "RuntimeError: \"addmm_sparse_csr\" not implemented for 'BFloat16'"}
    with pytest.raises(RuntimeError, match="illegal memory access"):
        kernels.measure_row({"dense": lambda: None, "sp.mm": crashes}, cpu, 1, 2)


def test_kernel_cases_are_interleaved_in_rotated_rounds():
    calls = []
    steps = {k: (lambda k=k: calls.append(k)) for k in ("dense", "torch", "sp.mm")}
    times, skipped = kernels.measure_row(steps, kernels.torch.device("cpu"), warmup=1, reps=3)
    assert not skipped and set(times) == set(steps)
    assert calls == [
        "dense",
        "torch",
        "sp.mm",  # warm-up
        "dense",
        "torch",
        "sp.mm",
        "torch",
        "sp.mm",
        "dense",
        "sp.mm",
        "dense",
        "torch",
    ]
