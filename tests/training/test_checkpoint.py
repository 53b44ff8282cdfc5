"""Checkpoints: the previous good one is kept, a corrupt latest one falls back to it with one warning
naming the bad file, none usable is one error line (status steps kept), a full disk leaves no partial
checkpoint and the previous one loadable."""

from __future__ import annotations

import errno
import json
import logging

import pytest

from rosa.training import checkpoint as ckpt
from tests.training.faults import Killed, die_before_step, history, latest_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    code, run_dir = train(tmp_path_factory.mktemp("straight"))
    assert code == 0
    return history(latest_checkpoint(run_dir))


def killed_at_5(tmp_path, monkeypatch):
    """A run stopped while doing step 5: its checkpoints of steps 2 and 4 are on disk."""
    die_before_step(monkeypatch, 5)
    with pytest.raises(Killed):
        train(tmp_path)
    monkeypatch.undo()
    (run_dir,) = [p.parent for p in tmp_path.rglob("config.yaml")]
    return run_dir


CORRUPT = {
    "adapter.safetensors": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),  # truncated
    "trainer.pt": lambda p: p.write_bytes(b"garbage"),
    "state.json": lambda p: p.write_text("{not json"),
}


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_good_one(tmp_path, monkeypatch, caplog, straight, name):
    run_dir = killed_at_5(tmp_path, monkeypatch)
    root = run_dir / ckpt.CHECKPOINTS
    assert sorted(p.name for p in root.glob("step-*")) == ["step-0000002", "step-0000004"]
    bad = root / "step-0000004" / name
    CORRUPT[name](bad)
    caplog.set_level(logging.INFO)
    code, _ = train(tmp_path)
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "step-0000002" in warnings[0], warnings
    assert any("resumed from" in r.getMessage() and "step 2," in r.getMessage() for r in caplog.records)
    assert history(latest_checkpoint(run_dir)) == straight  # bit-identical to the uninterrupted run


def test_no_usable_checkpoint_is_one_error_line_and_keeps_status_steps(tmp_path, monkeypatch, capsys):
    run_dir = killed_at_5(tmp_path, monkeypatch)
    for step in ("step-0000002", "step-0000004"):
        CORRUPT["trainer.pt"](run_dir / ckpt.CHECKPOINTS / step / "trainer.pt")
    capsys.readouterr()
    code, _ = train(tmp_path)
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and err.startswith("error: ") and "trainer.pt" in err, err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["steps"] == 4 and "trainer.pt" in status["error"]


@pytest.mark.parametrize("status_too", [False, True], ids=["checkpoint", "checkpoint-and-status"])
def test_full_disk_fails_in_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys, status_too):
    """ENOSPC while writing step 4's checkpoint (and, the disk staying full, status.json too)."""
    from rosa import atomic

    real, calls, full = ckpt.save_file, {"n": 0}, []
    real_json = atomic.write_json

    def fills_the_disk(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of step 4: a partial file, then ENOSPC
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)
            full.append(filename)
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, *args, **kwargs)

    def json_on_a_full_disk(path, data):
        if full and status_too:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_json(path, data)

    monkeypatch.setattr(ckpt, "save_file", fills_the_disk)
    monkeypatch.setattr(atomic, "write_json", json_on_a_full_disk)
    code, run_dir = train(tmp_path)
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "No space left on device" in err, err
    status = json.loads((run_dir / "status.json").read_text())
    if status_too:  # the last status that could be written, and the one line says so
        assert status["state"] == "running" and "status.json not updated" in err
    else:
        assert status["state"] == "failed" and "No space left on device" in status["error"]
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    latest = latest_checkpoint(run_dir)
    assert latest.name == "step-0000002"
    tensors, _trainer, state = ckpt.load_checkpoint(latest)
    assert state["step"] == 2 and tensors


def test_write_once_tensors_are_linked_until_their_tag_changes(tmp_path):
    """Tensors named in ``write_once`` go to once-<tag>.safetensors: written at the first checkpoint of
    a tag, hard-linked (same inode, no bytes written) into later ones, written anew for a new tag, and
    loaded back with the adapter tensors."""
    import torch

    tensors = {"layer.w_fixed": torch.randn(64, 32), "layer.rosa_A": torch.randn(64, 4)}
    trainer = {"rng": ckpt.rng_state()}
    inode = {}
    for step, tag in ((2, "sample1-step0"), (4, "sample1-step0"), (6, "sample2-step5")):
        path = ckpt.save_checkpoint(
            tmp_path,
            step,
            tensors,
            trainer,
            {"step": step},
            keep=latest_checkpoint(tmp_path),
            write_once=(tag, {"layer.w_fixed"}),
        )
        once = path / f"once-{tag}.safetensors"
        inode[step] = once.stat().st_ino
        loaded, _, _ = ckpt.load_checkpoint(path)
        assert set(loaded) == set(tensors) and torch.equal(loaded["layer.w_fixed"], tensors["layer.w_fixed"])
    assert inode[4] == inode[2] and inode[6] != inode[4]
    from safetensors.torch import load_file

    assert set(load_file(str(path / "adapter.safetensors"))) == {"layer.rosa_A"}
    once.write_bytes(once.read_bytes()[:100])  # a damaged once-file makes its checkpoint unusable
    with pytest.raises(ckpt.CheckpointError, match="once-sample2-step5.safetensors"):
        ckpt.verify_checkpoint(path)
