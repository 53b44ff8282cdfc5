"""Checkpoints: everything needed to continue a run exactly where it stopped.

Layout (one folder per checkpoint, the newest named in ``latest.json``)::

    <run>/checkpoints/step-000050/
        adapter.safetensors   trainable parameters and method buffers (masks, indices, factors)
        trainer.pt            optimizer, grad scaler, RNG states (read with weights_only=True)
        state.json            step counters, method bookkeeping, metrics so far

A checkpoint is written into ``step-N.tmp`` and renamed when complete; ``latest.json`` is then
replaced atomically, and only after that is the previous checkpoint removed. A kill at any point
leaves at least one complete checkpoint that ``latest.json`` (or a scan) finds.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rosa import atomic

CHECKPOINTS = "checkpoints"


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], trainer: dict, state: dict) -> Path:
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step-{step:07d}"
    tmp = root / f"step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({n: t.detach().contiguous().cpu() for n, t in tensors.items()}, str(tmp / "adapter.safetensors"))
    torch.save(trainer, tmp / "trainer.pt")
    atomic.write_json(tmp / "state.json", state)
    for f in tmp.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    previous = latest_checkpoint(run_dir)
    atomic.write_json(root / "latest.json", {"step": step, "path": final.name})
    if previous is not None and previous != final:
        shutil.rmtree(previous, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / "latest.json"
    if pointer.exists():
        try:
            candidate = root / atomic.read_json(pointer)["path"]
            if _complete(candidate):
                return candidate
        except (ValueError, KeyError):
            pass
    complete = sorted(p for p in root.glob("step-*") if not p.name.endswith(".tmp") and _complete(p))
    return complete[-1] if complete else None


def _complete(path: Path) -> bool:
    return all((path / f).exists() for f in ("adapter.safetensors", "trainer.pt", "state.json"))


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[dict, dict, dict]:
    tensors = load_file(str(path / "adapter.safetensors"), device=str(device))
    trainer = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    state = atomic.read_json(path / "state.json")
    return tensors, trainer, state
