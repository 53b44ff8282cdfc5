"""Every method's tiny-model run against values recorded before the redesign (issue 24): the same run
folder, per-step losses, validation losses, metrics and generated texts. A refactor that changes a
number, a run's identity or a default fails here.

    python -m tests.training.test_recorded_runs --record   # rewrite recorded_runs.json (only when a
                                                           # change of numbers is intended: say why)

One thread, fp32: the losses are compared to 1e-6 (the same code on another CPU's kernels rounds
differently in the last bits), everything else exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import run_train

RECORDED = Path(__file__).with_name("recorded_runs.json")
COMMON = [
    "model=tiny",
    "dataset=viggo",
    "threads=1",
    "train.max_steps=6",
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "train.eval_every=3",
    "train.eval_batches=2",
    "train.checkpoint_every=3",
    "train.sample_at_eval=false",
    "dataset.sample_rows.train=32",
    "dataset.sample_rows.validation=8",
    "dataset.sample_rows.test=4",
    "eval.limit=4",
    "eval.max_new_tokens=12",
]
METHODS = {
    "lora": ["fnmodel=lora"],
    "dora": ["fnmodel=dora"],
    "rosa-robust": ["fnmodel=rosa-robust", "fnmodel.warmup_steps=2", "fnmodel.density=0.05", "fnmodel.rank=4"],
    "spa": ["fnmodel=spa", "fnmodel.density=0.05"],
    "rosa-orthogonal": ["fnmodel=rosa-orthogonal", "fnmodel.resample_every=2"],
    "fft": ["fnmodel=fft", "train.lr=1e-4"],
    "peft-lora": ["fnmodel=peft", "++fnmodel.config.r=4"],
}


def observe(root: Path, overrides: list[str]) -> dict:
    """Train one run below ``root``; what it produced, as plain JSON."""
    result = run_train(*COMMON, *overrides, f"output.path={root}")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next(p.parent for p in root.rglob("config.yaml"))
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    state = json.loads((run_dir / "checkpoints" / latest["path"] / "state.json").read_text())
    status = json.loads((run_dir / "status.json").read_text())
    metrics = json.loads((run_dir / "metrics-test.json").read_text())
    predictions = [json.loads(line) for line in (run_dir / "predictions-test.jsonl").read_text().splitlines()]
    return {
        "run_dir": run_dir.relative_to(root).as_posix(),
        "losses": [h["loss"] for h in state["history"]],
        "val_losses": [h["loss"] for h in state["val_history"]],
        "trainable_params": status["trainable_params"],
        "final_val_loss": status["final_val_loss"],
        "metrics": metrics["metrics"],
        "generated": [p["generated"] for p in predictions],
    }


@pytest.mark.parametrize("method", list(METHODS))
def test_a_tiny_run_gives_the_recorded_numbers(method, tmp_path):
    recorded = json.loads(RECORDED.read_text())[method]
    seen = observe(tmp_path, METHODS[method])
    assert seen["run_dir"] == recorded["run_dir"]  # the same folder: identity and name
    assert seen["trainable_params"] == recorded["trainable_params"]
    assert seen["losses"] == pytest.approx(recorded["losses"], abs=1e-6)
    assert seen["val_losses"] == pytest.approx(recorded["val_losses"], abs=1e-6)
    assert seen["final_val_loss"] == pytest.approx(recorded["final_val_loss"], abs=1e-6)
    assert seen["generated"] == recorded["generated"]
    assert seen["metrics"] == pytest.approx(recorded["metrics"], abs=1e-9)


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    values = {}
    for name, overrides in METHODS.items():
        with tempfile.TemporaryDirectory() as folder:
            values[name] = observe(Path(folder), overrides)
            print(name, values[name]["run_dir"], values[name]["losses"][-1])
    RECORDED.write_text(json.dumps(values, indent=1) + "\n")
    print(f"wrote {RECORDED}")
