"""A really full disk (a small tmpfs mounted for the test): every write the harness makes (a checkpoint,
the evaluation's predictions and metrics, a merged export, RoSA's mask file) fails in one line that
names the path and the space, exits non-zero, leaves no half-written file where a reader would take
it, and works again once space is back (a training run resumes from its last good checkpoint).

Mocked OSErrors (tests/training/test_checkpoint.py) cannot show this: the libraries we write through
hide the OS's error (safetensors raises ``SafetensorError``, torch.save ``RuntimeError``), which is
how a full disk once ended in a 26-line traceback."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import IN_CI, run_train

NO_SPACE = "No space left on device"
# fft on the tiny model: a checkpoint (weights + AdamW's two moments) is ~21 MiB, so 32 MiB holds one
FFT = [
    "fnmodel=fft",
    "train.max_steps=6",
    "train.checkpoint_every=3",
    "dataset.max_length=128",
    "threads=1",
    "dataset.sample_rows.train=24",
    "dataset.sample_rows.validation=8",
    "train.eval_at_end=false",
    "train.sample_at_eval=false",
]


class SmallDisk:
    """A tmpfs of ``size_mib`` at ``path``; ``resize`` gives space back, ``fill`` takes it all."""

    def __init__(self, path, size_mib: int):
        self.path = path
        path.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)], capture_output=True, text=True
        )
        if mounted.returncode != 0:
            reason = f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}"
            pytest.fail(reason + " (CI=true requires it)") if IN_CI else pytest.skip(reason)

    def resize(self, size_mib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_mib}m", str(self.path)], check=True)

    def fill(self) -> None:
        """Write a file until the disk is full."""
        with open(self.path / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 2**16)
                    f.flush()
            except OSError:
                pass

    def free(self) -> None:
        (self.path / "filler").unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    disks = []

    def make(size_mib: int) -> SmallDisk:
        disks.append(SmallDisk(tmp_path / f"disk{len(disks)}", size_mib))
        return disks[-1]

    yield make
    for disk in disks:
        disk.unmount()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("error", "Error", "Traceback", "  File"))]


def history(run_dir):
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    return json.loads((run_dir / "checkpoints" / latest["path"] / "state.json").read_text())["history"]


def test_a_full_disk_stops_training_in_one_line_and_the_rerun_resumes(small_disk):
    disk = small_disk(32)
    failed = run_train(*FFT, f"output.path={disk.path}")
    (run_dir,) = [p.parent for p in disk.path.rglob("config.yaml")]
    checkpoint = run_dir / "checkpoints" / "step-0000006"
    assert failed.returncode == 1, failed.stderr[-2000:]
    (line,) = error_lines(failed.stderr)
    assert line.startswith(f"error: run {run_dir} failed: cannot write {checkpoint}: {NO_SPACE} ("), line
    assert "free, the write needs about 21." in line  # fp32 weights + two AdamW moments
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and NO_SPACE in status["error"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest.json", "step-0000003"]

    disk.resize(80)  # space is back: the rerun resumes from step 3 and finishes
    resumed = run_train(*FFT, f"output.path={disk.path}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {run_dir / 'checkpoints' / 'step-0000003'} (step 3," in resumed.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
    assert [h["step"] for h in history(run_dir)] == [1, 2, 3, 4, 5, 6]


def test_evaluation_and_export_on_a_full_disk_fail_in_one_line_and_leave_nothing_half_written(
    small_disk, tmp_path_factory, capsys
):
    from tests.evaluation.test_eval_cli import FAST, load_cli
    from tests.evaluation.tiny_run import copy_runs, only_run

    disk = small_disk(16)
    runs = copy_runs(tmp_path_factory, disk.path / "runs")
    run = only_run(runs)
    before = sorted(p.name for p in run.iterdir())
    eval_main = load_cli()
    disk.fill()
    capsys.readouterr()

    assert eval_main([str(runs), *FAST, "--limit", "2"]) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "FAILED" in line or "Traceback" in line]
    assert line.startswith(f"{run}: FAILED WriteError: cannot write {run / 'predictions-test.jsonl'}: {NO_SPACE} ("), (
        err
    )
    assert sorted(p.name for p in run.iterdir()) == before  # no metrics, no predictions, no temporary file

    assert eval_main([str(run), "--export-merged", str(disk.path / "merged")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run} cannot be exported: cannot write {disk.path / 'merged'}: {NO_SPACE} (")
    assert "\n" not in err and "the write needs about" in err, err
    assert not (disk.path / "merged").exists() and not (disk.path / "merged.tmp").exists()

    disk.free()  # space is back: the same commands succeed
    assert eval_main([str(runs), *FAST, "--limit", "2"]) == 0
    assert (run / "metrics-test.json").exists()
    assert eval_main([str(run), "--export-merged", str(disk.path / "merged")]) == 0
    assert (disk.path / "merged" / "config.json").exists()


def test_a_mask_file_on_a_full_disk_is_one_line_and_no_file(small_disk):
    import torch

    from rosa import atomic
    from rosa.methods.rosa_robust.masks import masks_from_scores, save_masks

    disk = small_disk(1)
    masks = masks_from_scores({"layer": torch.rand(512, 512)}, 0.5)
    disk.fill()
    with pytest.raises(atomic.WriteError) as err:
        save_masks(disk.path / "masks.safetensors", masks)
    assert str(err.value).startswith(f"cannot write {disk.path / 'masks.safetensors'}: {NO_SPACE} (")
    needed = sum(t.numel() * t.element_size() for m in masks.values() for t in (m.row_offsets, m.col_indices))
    assert "\n" not in str(err.value) and f"the write needs about {needed / 2**20:.1f} MiB)" in str(err.value)
    assert [p.name for p in disk.path.iterdir()] == ["filler"]
    disk.free()
    save_masks(disk.path / "masks.safetensors", masks)
    assert (disk.path / "masks.safetensors").exists()
