"""Run folders: their names, ``status.json``, the lock, finding them (a leaf: imports no other part).

A run's folder is derived from its configuration alone::

    <output.path>/<dataset>/<method>/<readable name>-<hash of the run's identity>

so the same command finds the same folder (and resumes or skips it), while any change to a setting
that affects training gives a new one. ``status.json`` records state (running | done | failed), the
error, times, steps, trainable parameters and peak memory; it is always written atomically.

The identity rule (kept by tests/test_config.py::test_the_always_hashed_keys_never_grow):

1. Every key of every config dataclass is hashed, unless its field says otherwise, next to its
   declaration: ``rosa.schema.NOT_IDENTITY`` when it cannot change the weights (logging and evaluation
   cadence, output, device, threads), or ``rosa.schema.neutral(value)`` for a key added after runs
   existed: the behaviour from before the key, at which it stays out of the hash.
2. The always-hashed keys never grow (``always_hashed_keys``; tests/conf/identity_v1.json records
   them): a key added later declares its neutral value or is NOT_IDENTITY. So an upgrade that adds a
   key keeps every existing run's folder, and any setting that changes training gives a new folder.
   A new method's keys are recorded with it.
3. A neutral value never changes and a key never moves between classes; training also refuses to
   resume a folder whose stored config trains differently (``rosa/training/preflight.py``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import IO, get_type_hints

from rosa import atomic

STATUS_FILE = "status.json"
LOCK_FILE = ".lock"
FINAL_RECORD = Path("adapter") / "run-record.json"  # the finished run's status, saved with its adapter
BEST_ADAPTER = Path("best")  # train.keep_best: the best adapter so far (rosa/training/selection.py)
BEST_RECORD = BEST_ADAPTER / "best-record.json"  # its step, metric and value, saved with it
CHECKPOINT_NAMES = ("last", "best")  # the adapters a finished run may be evaluated with: final, best
log = logging.getLogger("rosa")


class RunLocked(RuntimeError):
    """Another process holds the run; the message (one line) names it."""


# ----------------------------------------------------------------------------- names and identity
def run_identity(run) -> dict:
    """The settings that decide the trained weights, as a nested dict (the rule is above)."""
    out = {}
    for f in fields(run):
        value = getattr(run, f.name)
        if f.metadata.get("identity") is False:
            continue
        if "neutral" in f.metadata and value == f.metadata["neutral"]:
            continue
        out[f.name] = (
            run_identity(value)
            if hasattr(value, "__dataclass_fields__")
            else json.loads(json.dumps(value, default=str))
        )
    return out


def flat_keys(data: dict, prefix: str = "") -> dict:
    """A nested mapping as one level of ``section.key`` names (an empty mapping stays a value)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def run_hash(run) -> str:
    blob = json.dumps(run_identity(run), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def always_hashed_keys(schemas) -> list[str]:
    """``Class.key`` of every key of these config dataclasses (and those they nest) that is always in
    the identity: neither ``NOT_IDENTITY`` nor with a neutral value. Rule 2 above: this set never grows
    (tests/conf/identity_v1.json records it)."""
    found, seen = [], set()

    def walk(schema: type) -> None:
        if schema in seen:
            return
        seen.add(schema)
        hints = get_type_hints(schema)
        for f in fields(schema):
            if f.metadata.get("identity") is False or "neutral" in f.metadata:
                continue
            found.append(f"{schema.__name__}.{f.name}")
            if hasattr(hints[f.name], "__dataclass_fields__"):
                walk(hints[f.name])

    for schema in schemas:
        walk(schema)
    return sorted(found)


def readable_name(run) -> str:
    """``output.name``, or the model's name and the method's parts (its config's ``run_name_parts``:
    e.g. ``smollm2-135m-r8-lr0.0007``), plus the precision when it is not fp32."""
    if run.output.name:
        return run.output.name
    parts = [Path(run.model.name.rstrip("/")).name, *run.fnmodel.run_name_parts(run.train.lr)]
    if run.precision.name not in ("auto", "fp32"):
        parts.append(run.precision.name)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", "-".join(parts))


def run_dir_for(run) -> Path:
    return Path(run.output.path) / run.dataset.name / run.fnmodel.name / f"{readable_name(run)}-{run_hash(run)}"


def result_name(split: str, checkpoint: str = "last") -> str:
    """What names a result file (``metrics-<it>.json``, ``predictions-<it>.jsonl``): the split for the
    final adapter (the names from before best adapters existed), ``<split>-best`` for the best one."""
    return split if checkpoint == "last" else f"{split}-{checkpoint}"


def read_status(run_dir: Path) -> dict | None:
    path = Path(run_dir) / STATUS_FILE
    if not path.exists():
        return None
    try:
        return atomic.read_json(path)
    except ValueError:
        return {"state": "corrupt", "error": f"unreadable {path}"}


def recover_status(run_dir: Path) -> dict | None:
    """``status.json`` (as :func:`read_status`); when it is missing or unreadable and the run is
    finished (its adapter folder holds the final record), the record is restored and returned, with
    one line on stderr. An unreadable status of an unfinished run gives one warning."""
    path = Path(run_dir) / STATUS_FILE
    status = read_status(run_dir)
    if status is not None and status.get("state") != "corrupt":
        return status
    record_path = Path(run_dir) / FINAL_RECORD
    try:
        record = atomic.read_json(record_path) if record_path.exists() else None
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and record.get("state") == "done":
        try:
            atomic.write_json(path, record)
            done = "restored from"
        except OSError as err:  # a read-only tree (eval.py, compile_results.py): the record is still used
            done = f"not restored ({err.strerror or err}); using"
        print(
            f"warning: {path} was {'missing' if status is None else 'unreadable'}; {done} {record_path} "
            "(the run is finished)",
            file=sys.stderr,
        )
        return record
    if status is not None:
        log.warning(
            "warning: %s is unreadable and there is no %s: the run is not finished (training writes status.json anew)",
            path,
            record_path,
        )
    return status


def lock_run(run_dir: Path) -> IO:
    """Hold the run for this process (an flock on ``<run>/.lock``, released by the OS when the
    process ends, however it ends). RunLocked names the holder. Close the returned file to release."""
    path = Path(run_dir) / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLocked(
            f"run {run_dir} is in use by {holder} (lock {path}); allowed: one process per run: "
            "wait for it to end, or stop it"
        ) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def update_status(run_dir: Path, **fields) -> dict:
    status = read_status(run_dir) or {}
    if status.get("state") == "corrupt":
        status = {}
    status.update(fields)
    status["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic.write_json(Path(run_dir) / STATUS_FILE, status)
    return status


def find_runs(root: Path) -> list[Path]:
    """Every run folder below ``root`` (a folder holding config.yaml), ``root`` itself included; not
    hidden folders, nor W&B's own (``wandb/``, whose run folders hold a config.yaml of W&B's)."""
    root = Path(root)
    found = [
        p.parent
        for p in root.rglob("config.yaml")
        if not any(part.startswith(".") or part == "wandb" for part in p.parent.relative_to(root).parts)
    ]
    return sorted(set(found))
