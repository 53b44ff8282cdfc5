"""Precision end to end: bf16, fp16 and nf4 (4-bit base) runs of lora and rosa-robust through the real
training loop (``rosa.training.lifecycle.train``: train.py's code path, in this process) on the built-in tiny
model and the built-in E2E sample, then ``eval.py`` on them.

Each (precision, method) is trained once, uninterrupted (``straight``), and that run is shared by:
- the kill test: the same run killed while doing its last-but-one step (the checkpoint of the step
  before is on disk), then resumed: the same per-step losses and the same final adapter tensors, bit
  for bit, and in fp16 the same GradScaler state. Each kill is a real SIGKILL of ``python train.py``
  (it signals itself at the end of the step, ``ROSA_TEST_SIGNAL_AT_STEP``); the resume runs here;
- eval.py, merged (the default) and unmerged (``--no-merge``), on 2 test rows with 8 new tokens;
- nf4: ``eval.py <run> --export-merged DIR``, loaded by transformers alone, against the adapted model.

fp16 runs on CPU: torch 2.13 has fp16 autocast and ``GradScaler("cpu")``. The loop's scaler keeps
torch's defaults, with which it never changes in a few steps of the tiny model (its scale doubles only
every 2000 steps and 65536 never overflows here), so a resume that lost its state would go unseen.
This module gives it ``growth_interval=1`` (``lively_grad_scaler``): the scale doubles after every
step and halves at an fp16 overflow, which skips that step's update (here fp16 rosa-robust overflows
at step 6, after the kill). A resume without the scaler's state then ends with another scale, and
fp16 gradients (rounded at another scale) give other losses.

Runs: 4 steps, a checkpoint every 2, 16 training rows, lr 2e-3 (the adapter then moves the logits well
beyond bf16 rounding, which the export test needs). rosa-robust: 1 warm-up step, the masks from one
step's 2 micro-batches, the restart, then the 4 steps: 6 steps in all, the kill after the restart.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from rosa.models.quantize import is_nf4
from rosa.runs import read_status, run_dir_for
from rosa.training import loop
from tests.conftest import REPO
from tests.evaluation.test_eval_cli import load_cli
from tests.training.faults import FAST, config, history, latest_checkpoint, train

needs_nf4 = pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao (NF4) is not installed")

COMMON = ["device=cpu", "train.max_steps=4", "train.lr=2e-3", "dataset.sample_rows.test=8"]
METHODS = {
    "lora": ["fnmodel=lora"],
    "rosa-robust": [
        "fnmodel=rosa-robust",
        "fnmodel.rank=4",
        "fnmodel.density=0.02",
        "fnmodel.warmup_steps=1",
        "fnmodel.mask_samples=2",
        "fnmodel.lora_lr=2e-3",
        "fnmodel.sparse_lr=2e-3",
    ],
}
TOTAL_STEPS = {"lora": 4, "rosa-robust": 6}  # rosa-robust: + the warm-up and the collection step
CASES = [
    pytest.param(p, m, id=f"{p}-{m}", marks=[needs_nf4] if p == "nf4" else [])
    for p in ("bf16", "fp16", "nf4")
    for m in METHODS
]
INITIAL_SCALE = 65536.0  # torch's GradScaler init_scale
EVAL = ["--limit", "2", "--max-new-tokens", "8"]


def overrides(precision: str, method: str) -> list[str]:
    return [f"precision={precision}", *COMMON, *METHODS[method]]


def scaler_state(checkpoint) -> dict:
    return torch.load(checkpoint / "trainer.pt", weights_only=True)["scaler"]


def adapter_tensors(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter.safetensors"))


@pytest.fixture(scope="module", autouse=True)
def keep_torch_threads():
    """The runs set one torch thread (threads=1) in this process; the other modules get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def use_a_lively_grad_scaler(setattr=setattr) -> None:
    """The loop's fp16 GradScaler with growth_interval=1 (the rest as built): see the module docstring."""
    built = loop.Trainer.__init__

    def init(self, *args, **kwargs):
        built(self, *args, **kwargs)
        if self.scaler.is_enabled():
            self.scaler = torch.amp.GradScaler(self.device.type, growth_interval=1)

    setattr(loop.Trainer, "__init__", init)


# python train.py with the same scaler as the runs in this process
TRAIN_PY_LIVELY = (
    "import runpy, sys\n"
    "from tests.training.test_precision import use_a_lively_grad_scaler\n"
    "use_a_lively_grad_scaler()\n"
    "sys.argv = ['train.py'] + sys.argv[1:]\n"
    "runpy.run_path('train.py', run_name='__main__')\n"
)


@pytest.fixture(scope="module", autouse=True)
def lively_grad_scaler():
    with pytest.MonkeyPatch.context() as patch:
        use_a_lively_grad_scaler(patch.setattr)
        yield


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """``straight(precision, method)``: the run folder of its uninterrupted run, trained on first use."""
    runs = {}

    def get(precision: str, method: str):
        if (precision, method) not in runs:
            code, run_dir = train(
                tmp_path_factory.mktemp(f"straight-{precision}-{method}"), *overrides(precision, method)
            )
            assert code == 0
            runs[precision, method] = run_dir
        return runs[precision, method]

    return get


@pytest.fixture
def eval_main():
    return load_cli()


@pytest.mark.parametrize("precision, method", CASES)
def test_killed_run_resumes_with_identical_losses_and_adapter(precision, method, straight, tmp_path, caplog):
    reference = straight(precision, method)
    total = TOTAL_STEPS[method]
    kill_at = total - 1  # killed while doing this step: the checkpoint of total - 2 is the newest
    args = overrides(precision, method)
    # python train.py SIGKILLs itself at the end of that step, before its checkpoint
    killed = subprocess.run(
        [sys.executable, "-c", TRAIN_PY_LIVELY, *FAST, *args, f"output.path={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "TQDM_DISABLE": "1",
            "OMP_NUM_THREADS": "1",
            "ROSA_TEST_SIGNAL_AT_STEP": f"{kill_at}:SIGKILL",
        },
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = run_dir_for(config(tmp_path, *args))
    resume_from = latest_checkpoint(run_dir)
    assert resume_from.name == f"step-{total - 2:07d}" and read_status(run_dir)["state"] == "running"
    if method == "rosa-robust":  # the kill lands after the masks and the restart
        assert json.loads((resume_from / "state.json").read_text())["method"]["phase"] == "sparse"
    if precision == "fp16":  # the checkpoint holds the scaler's state, which the run has changed
        assert scaler_state(resume_from)["scale"] != INITIAL_SCALE

    caplog.set_level(logging.INFO)
    code, _ = train(tmp_path, *args)
    assert code == 0
    assert any(m.startswith(f"resumed from {resume_from} (step {total - 2},") for m in caplog.messages)
    final, expected = latest_checkpoint(run_dir), latest_checkpoint(reference)
    assert len(history(final)) == total and history(final) == history(expected)  # exact equality
    got, want = adapter_tensors(run_dir), adapter_tensors(reference)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[name], want[name]) for name in want), [
        n for n in want if not torch.equal(got[n], want[n])
    ]
    if precision == "fp16":  # restored on resume: the same scale (and growth tracker) at the end
        assert scaler_state(expected)["scale"] != INITIAL_SCALE
        assert scaler_state(final) == scaler_state(expected)


@pytest.mark.parametrize("precision, method", CASES)
def test_eval_merged_and_unmerged(precision, method, straight, tmp_path, eval_main):
    run = tmp_path / "run"  # a copy: evaluation writes into the run folder
    shutil.copytree(straight(precision, method), run)
    assert eval_main([str(run), *EVAL]) == 0
    merged = json.loads((run / "metrics-test.json").read_text())
    assert eval_main([str(run), *EVAL, "--no-merge", "--force"]) == 0
    unmerged = json.loads((run / "metrics-test.json").read_text())

    assert merged["merged"] is True and merged["merge_note"] == ""
    assert unmerged["merged"] is False and "--no-merge" in unmerged["merge_note"]
    for record in (merged, unmerged):
        assert record["n_examples"] == 2 and record["decoding"]["max_new_tokens"] == 8
        assert set(record["metrics"]) >= {"bleu", "nist", "rouge_l", "cider"}
        assert all(math.isfinite(v) for v in record["metrics"].values()), record["metrics"]


@needs_nf4
@pytest.mark.parametrize("method", list(METHODS))
def test_nf4_merged_export_loads_in_transformers_with_the_adapted_logits(method, straight, tmp_path, eval_main):
    """The export (bf16: dequantised 4-bit base + the adapter's change) against the run's model (the
    4-bit base with the adapter, unmerged, under bf16 autocast as in training): their logits agree to
    bf16 rounding (docs/nf4.md: ~0.8% of the mean |logit|), and the adapter moves them far more."""
    from transformers import AutoModelForCausalLM

    from rosa.evaluation.load import load_run
    from rosa.methods import build_model

    run = straight("nf4", method)
    assert eval_main([str(run), "--export-merged", str(tmp_path / "merged")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    adapted = load_run(run, "cpu", merge=False)
    assert any(is_nf4(p) for p in adapted.model.parameters())
    without_adapter = build_model(adapted.run, adapted.device, adapted.precision)[0].eval()  # as trained, before step 1
    x = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = exported(input_ids=x).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = adapted.model(input_ids=x).logits.float()
            dropped = without_adapter(input_ids=x).logits.float()
    tolerance = 0.02 * want.abs().mean()
    assert (got - want).abs().mean() < tolerance
    assert (dropped - want).abs().mean() > 5 * tolerance  # an export that lost the adapter would fail
