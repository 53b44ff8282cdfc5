"""Atomic writes: write to a temporary file in the same folder, fsync, then rename over the target.
A kill at any moment leaves either the old file or the new one, never half of one.

Kept as our own (a few lines) rather than a dependency such as ``atomicwrites`` (unmaintained since
2022) or ``safer``: we need exactly one pattern, for text, JSON and any writer callback
(safetensors, matplotlib), and it must fsync before the rename.

A write that fails for a reason of the file system (a full disk, a quota, a read-only mount) raises
:class:`WriteError`, an ``OSError`` whose message is one line: the path, the reason and, for a full
disk, the space free and the space the write needed. The libraries we write through hide the OS's
error: safetensors raises ``SafetensorError("... (os error 28)")`` and ``torch.save`` an
``enforce fail ... unexpected pos`` RuntimeError; :func:`writing` and :func:`torch_save` recover it."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

_OS_ERROR_IN_MESSAGE = re.compile(r"\(os error (\d+)\)")  # how Rust (safetensors) reports an io::Error
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class WriteError(OSError):
    """A write that failed in the file system; ``str()`` is one line for the user."""

    def __init__(self, code: int, path: Path, reason: str, needed_bytes: int | None = None):
        self.path, self.reason = Path(path), reason
        if code in _NO_SPACE:  # what the user must free, measured after the failed write cleaned up
            free = _free_bytes(self.path)
            space = ([f"{_mib(free)} free"] if free is not None else []) + (
                [f"the write needs about {_mib(needed_bytes)}"] if needed_bytes else []
            )
            reason += f" ({', '.join(space)})" if space else ""
        super().__init__(code, f"cannot write {path}: {reason}")

    def __str__(self) -> str:
        return self.strerror


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _os_error(err: BaseException) -> tuple[int, str] | None:
    """(errno, reason) of the OS error behind ``err``: itself, or the errno a library's message carries."""
    if isinstance(err, WriteError):
        return err.errno, err.reason
    if isinstance(err, OSError):
        return err.errno, err.strerror or str(err)
    found = _OS_ERROR_IN_MESSAGE.search(str(err))
    if found:
        code = int(found.group(1))
        return code, os.strerror(code)
    return None


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


@contextmanager
def writing(path: str | Path, needed_bytes: int | None = None) -> Iterator[None]:
    """Turn a failed write of ``path`` (a file, or a folder written as one unit) into a one-line
    :class:`WriteError` naming ``path``; other errors pass through. ``needed_bytes``: what the whole
    write needs, named when the disk is full. Nested, the outermost unit names the error."""
    try:
        yield
    except Exception as err:
        cause = _os_error(err)
        if cause is None:
            raise
        raise WriteError(cause[0], Path(path), cause[1], needed_bytes) from err


def tensor_bytes(obj) -> int:
    """The bytes of every tensor in ``obj``: a tensor, or dicts / lists / tuples nesting them (a
    state dict, an optimizer's state), for the space a write needs. Anything else counts 0."""
    if hasattr(obj, "element_size"):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


class _RememberingFile:
    """A file for ``torch.save`` that keeps the OSError torch's writer swallows."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self):
        try:
            return self.file.flush()
        except OSError as err:
            self.error = err
            raise


def torch_save(obj, path: str | Path) -> None:
    """``torch.save(obj, path)``, raising the OS's error (not torch's ``unexpected pos``) when a write fails."""
    with open(path, "wb") as file:
        remembering = _RememberingFile(file)
        try:
            import torch

            torch.save(obj, remembering)
        except RuntimeError as err:
            if remembering.error is not None:
                raise remembering.error from err
            raise


def atomic_write(path: str | Path, write: Callable[[str], None], needed_bytes: int | None = None) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically (:func:`writing`'s errors)."""
    path = Path(path)
    with writing(path, needed_bytes):
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


def replace_dir(directory: str | Path, write: Callable[[Path], None], needed_bytes: int | None = None) -> None:
    """Call ``write(tmp)`` to fill ``<directory>.tmp``, then put it in place of ``directory``. An error
    removes the ``.tmp`` folder; a kill leaves the old folder or the new one, never a half-written one."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with writing(directory, needed_bytes):
        try:
            write(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)


def write_text(path: str | Path, text: str) -> None:
    data = text.encode("utf-8")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), needed_bytes=len(data))


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
