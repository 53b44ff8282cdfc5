"""Checkpoints: everything needed to continue a run exactly where it stopped.

Layout (one folder per checkpoint, the newest named in ``latest.json``)::

    <run>/checkpoints/step-000050/
        adapter.safetensors   trainable parameters and method buffers (masks, indices, factors)
        trainer.pt            optimizer, grad scaler, RNG states (read with weights_only=True)
        state.json            step counters, method bookkeeping, metrics so far, the best so far
        once-<tag>.safetensors   tensors a method changes only at rare events (ROSA's W_fixed: tag =
                              its sampling), written once per tag and hard-linked into later
                              checkpoints (``Method.write_once_keys``); loaded with the adapter

A checkpoint is written into ``step-N.tmp``, checked (each file readable to its end), renamed, and
only then named in ``latest.json`` (replaced atomically). The previous good checkpoint is kept beside
it; older ones are removed. A kill or a write error (a full disk) at any point leaves a complete, good
checkpoint; a failed write removes its ``.tmp`` folder. Resuming takes the newest checkpoint that
loads and falls back to the previous one, naming the unreadable file (``usable_checkpoint``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rosa import atomic

CHECKPOINTS = "checkpoints"
FILES = ("adapter.safetensors", "trainer.pt", "state.json")
ONCE_PREFIX = "once-"
log = logging.getLogger("rosa")


class CheckpointError(RuntimeError):
    """An unreadable checkpoint file; the message (one line) names it."""


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


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint of ``step``."""
    return f"step-{step:07d}"


def save_checkpoint(
    run_dir: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    trainer: dict,
    state: dict,
    keep: Path | None = None,
    write_once: tuple[str, set[str]] | None = None,
) -> Path:
    """Write and check the checkpoint of ``step``, point ``latest.json`` at it, then remove every other
    checkpoint but ``keep`` (the previous good one). A failed write leaves no ``.tmp`` folder behind.
    ``write_once = (tag, names)``: those tensors go to ``once-<tag>.safetensors``, hard-linked from an
    existing checkpoint that holds the same tag (not written again) when there is one."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / checkpoint_name(step)
    tag, once_names = write_once or (None, set())

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        save_file(
            {n: t.detach().contiguous().cpu() for n, t in tensors.items() if n not in once_names},
            str(tmp / "adapter.safetensors"),
        )
        if tag is not None:
            _write_once(root, tmp / f"{ONCE_PREFIX}{tag}.safetensors", {n: tensors[n] for n in once_names})
        atomic.torch_save(trainer, tmp / "trainer.pt")
        atomic.write_json(tmp / "state.json", state)
        for f in tmp.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        verify_checkpoint(tmp)

    # the error names the checkpoint and the space it needs, measured after its .tmp folder is gone
    atomic.replace_dir(final, write, needed_bytes=atomic.tensor_bytes((tensors, trainer)))
    atomic.write_json(root / "latest.json", {"step": step, "path": final.name})
    for old in root.glob("step-*"):
        if old != final and (keep is None or old != Path(keep)):
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_once(root: Path, target: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Link ``target``'s name from a checkpoint that already holds it (intact), else write it."""
    for existing in sorted(root.glob(f"step-*/{target.name}"), reverse=True):
        if existing.parent.name.endswith(".tmp"):
            continue
        try:
            atomic.check_safetensors(existing)
            os.link(existing, target)
            return
        except (OSError, ValueError):  # damaged, or a file system without hard links: write it
            continue
    save_file({n: t.detach().contiguous().cpu() for n, t in tensors.items()}, str(target))


def verify_checkpoint(path: Path) -> None:
    """Cheap structural checks (no tensor is loaded): the safetensors headers and their data sizes,
    the zip directory of trainer.pt, state.json's JSON. Raises CheckpointError naming the bad file."""
    once = [(f.name, atomic.check_safetensors) for f in sorted(Path(path).glob(f"{ONCE_PREFIX}*.safetensors"))]
    for name, check in (
        ("adapter.safetensors", atomic.check_safetensors),
        *once,
        ("trainer.pt", _check_zip),
        ("state.json", lambda f: json.loads(f.read_text(encoding="utf-8"))),
    ):
        file = Path(path) / name
        try:
            check(file)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise CheckpointError(f"{file} is unreadable ({type(err).__name__}: {err})".splitlines()[0]) from err


def _check_zip(file: Path) -> None:
    with zipfile.ZipFile(file) as z:
        if not z.namelist():
            raise ValueError("an empty archive")


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, the one ``latest.json`` names first, then the others newest first."""
    root = Path(run_dir) / CHECKPOINTS
    found = sorted((p for p in root.glob("step-*") if not p.name.endswith(".tmp") and _complete(p)), reverse=True)
    try:
        named = root / atomic.read_json(root / "latest.json")["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return found
    return [named] + [p for p in found if p != named] if named in found else found


def usable_checkpoint(run_dir: Path, device: torch.device | str = "cpu") -> tuple[Path, tuple] | None:
    """The newest checkpoint that loads, with its contents; unreadable newer ones are named in one
    warning. None without checkpoints; CheckpointError when none loads."""
    errors = []
    for path in checkpoints(run_dir):
        try:
            loaded = load_checkpoint(path, device)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors:
            log.warning("warning: %s; resuming from the previous good checkpoint %s", "; ".join(errors), path)
        return path, loaded
    if errors:
        raise CheckpointError(
            f"no usable checkpoint in {Path(run_dir) / CHECKPOINTS}: {errors[-1]} "
            "(and every newer one); move the checkpoints folder away to restart from step 0"
        )
    return None


def _complete(path: Path) -> bool:
    return all((path / f).exists() for f in FILES)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[dict, dict, dict]:
    """(tensors, trainer state, state); CheckpointError (one line, naming the file) when one is unreadable."""
    path = Path(path)
    loaders = (
        ("adapter.safetensors", lambda f: load_file(str(f), device=str(device))),
        ("trainer.pt", lambda f: torch.load(f, map_location="cpu", weights_only=True)),
        ("state.json", atomic.read_json),
    )
    once = [(f.name, loaders[0][1]) for f in sorted(path.glob(f"{ONCE_PREFIX}*.safetensors"))]
    out = []
    for name, load in (*loaders, *once):
        try:
            out.append(load(path / name))
        except Exception as err:  # safetensors, pickle, zip and JSON errors alike
            raise CheckpointError(f"{path / name} is unreadable ({type(err).__name__}: {err})".splitlines()[0]) from err
    tensors, trainer, state, *written_once = out
    for part in written_once:
        tensors.update(part)
    return tensors, trainer, state
