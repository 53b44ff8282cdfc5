"""Run directories and their ``status.json``.

A run's folder is derived from its configuration alone::

    <output.path>/<dataset>/<method>/<readable name>-<hash of the run's identity>

so the same command finds the same folder (and resumes or skips it), while any change to a setting
that affects training gives a new one. ``status.json`` records state (running | done | failed), the
error, times, steps, trainable parameters and peak memory; it is always written atomically.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO

from rosa import atomic
from rosa.config import RunConfig, run_hash

STATUS_FILE = "status.json"
LOCK_FILE = ".lock"
FINAL_RECORD = Path("adapter") / "run-record.json"   # the finished run's status, saved with its adapter
log = logging.getLogger("rosa")


class RunLocked(RuntimeError):
    """Another process holds the run; the message (one line) names it."""


def readable_name(run: RunConfig) -> str:
    if run.output.name:
        return run.output.name
    model = Path(run.model.name.rstrip("/")).name
    parts = [model]
    method = asdict(run.fnmodel)
    if "peft_type" in method:  # fnmodel=peft: the PEFT method and its rank, e.g. lora-r8
        parts.append(str(method["peft_type"]).lower() + (f"-r{method['config']['r']}" if "r" in method["config"] else ""))
    for key, short in (("rank", "r"), ("density", "d"), ("budget", "b")):
        if method.get(key) not in (None, 0, 0.0) or (key == "rank" and method.get(key) == 0):
            parts.append(f"{short}{method[key]}")
    if "lora_lr" in method:
        parts.append(f"lr{method['lora_lr']:g}-{method['sparse_lr']:g}" if method.get("rank") else f"lr{method['sparse_lr']:g}")
    else:
        parts.append(f"lr{run.train.lr:g}")
    if run.precision.name not in ("auto", "fp32"):
        parts.append(run.precision.name)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", "-".join(parts))


def run_dir_for(run: RunConfig) -> Path:
    return Path(run.output.path) / run.dataset.name / run.fnmodel.name / f"{readable_name(run)}-{run_hash(run)}"


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
        print(f"warning: {path} was {'missing' if status is None else 'unreadable'}; {done} {record_path} "
              "(the run is finished)", file=sys.stderr)
        return record
    if status is not None:
        log.warning("warning: %s is unreadable and there is no %s: the run is not finished (training writes "
                    "status.json anew)", path, record_path)
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
        raise RunLocked(f"run {run_dir} is in use by {holder} (lock {path}); allowed: one process per run: "
                        "wait for it to end, or stop it") from None
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
    """Every run folder below ``root`` (a folder holding config.yaml), ``root`` itself included."""
    root = Path(root)
    found = [p.parent for p in root.rglob("config.yaml") if not any(part.startswith(".") for part in p.parent.relative_to(root).parts)]
    return sorted(set(found))
