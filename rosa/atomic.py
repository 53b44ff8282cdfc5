"""Atomic writes: write to a temporary file in the same folder, fsync, then rename over the target.
A kill at any moment leaves either the old file or the new one, never half of one.

Kept as our own (a few lines) rather than a dependency such as ``atomicwrites`` (unmaintained since
2022) or ``safer``: we need exactly one pattern, for text, JSON and any writer callback
(safetensors, matplotlib), and it must fsync before the rename."""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def replace_dir(directory: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to fill ``<directory>.tmp``, then put it in place of ``directory``. An error
    removes the ``.tmp`` folder; a kill leaves the old folder or the new one, never a half-written one."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_safetensors(file: Path) -> None:
    """ValueError / OSError unless ``file``'s header parses and its size is the one the header describes."""
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{len(head)} bytes, shorter than a safetensors header")
        (size,) = struct.unpack("<Q", head)
        if size > file.stat().st_size - 8:
            raise ValueError(f"a header of {size} bytes in a file of {file.stat().st_size}")
        try:
            header = json.loads(f.read(size))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise ValueError(f"a bad header ({type(err).__name__})") from err
    if file.stat().st_size != 8 + size + end:
        raise ValueError(f"{file.stat().st_size} bytes, the header describes {8 + size + end}")
