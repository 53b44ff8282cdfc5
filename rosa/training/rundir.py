"""Run directories and their ``status.json``.

A run's folder is derived from its configuration alone::

    <output.path>/<dataset>/<method>/<readable name>-<hash of the run's identity>

so the same command finds the same folder (and resumes or skips it), while any change to a setting
that affects training gives a new one. ``status.json`` records state (running | done | failed), the
error, times, steps, trainable parameters and peak memory; it is always written atomically.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path

from rosa import atomic
from rosa.config import RunConfig, run_hash

STATUS_FILE = "status.json"


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
