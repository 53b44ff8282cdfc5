"""Meteor 1.5, the METEOR of the official E2E scorer, run from pycocoevalcap's ``meteor-1.5.jar``.

The official scorer (tuetschek/e2e-metrics, through the COCO caption evaluation) lower-cases and
PTB-tokenises every text, drops punctuation tokens, then talks to one Java process
``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm``: for each segment it sends
``SCORE ||| ref 1 ||| ... ||| ref n ||| hypothesis`` and reads back that segment's match
statistics; then ``EVAL ||| stats 1 ||| ... ||| stats N`` returns N segment scores and the corpus
score, which is the reported METEOR (statistics aggregated over the corpus, not a mean of segment
scores). :func:`meteor_1_5` does exactly that on tokens the caller has made the same way.

The PyPI package ``pycocoevalcap`` ships the same jar and paraphrase table (``data/paraphrase-en.gz``)
as the official scorer; a Java runtime runs it (Debian: ``default-jre-headless``). The Java process
loads the paraphrase table once (about 10 s), so it is started on first use and kept for the life of
the Python process (closed at exit).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Sequence

__all__ = ["MeteorUnavailable", "meteor_1_5", "meteor_command"]

JAVA_HEAP = "-Xmx2G"  # the official scorer's setting
METEOR_OPTIONS = ("-", "-", "-stdio", "-l", "en", "-norm")


class MeteorUnavailable(RuntimeError):
    """Meteor 1.5 cannot run here (no Java, no pycocoevalcap, or the Java process failed)."""


def _meteor_dir() -> Path:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise MeteorUnavailable("pycocoevalcap is not installed (pip install pycocoevalcap)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "meteor"
    for needed in ("meteor-1.5.jar", "data/paraphrase-en.gz"):
        if not (folder / needed).is_file():
            raise MeteorUnavailable(f"pycocoevalcap has no {needed} in {folder}")
    return folder


def meteor_command() -> tuple[list[str], Path]:
    """The Java command line and its working directory (the jar finds its data relative to it)."""
    java = shutil.which("java")
    if java is None:
        raise MeteorUnavailable(
            "no Java runtime on PATH (apt-get install -y --no-install-recommends default-jre-headless)"
        )
    return [java, "-jar", JAVA_HEAP, "meteor-1.5.jar", *METEOR_OPTIONS], _meteor_dir()  # the official command


class _MeteorProcess:
    """One long-lived ``-stdio`` Meteor process; one request at a time."""

    def __init__(self):
        command, cwd = meteor_command()
        self.owner = os.getpid()  # a forked child must not talk to its parent's process
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                command,
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                encoding="utf-8",
                bufsize=1,
            )
        except OSError as err:
            raise MeteorUnavailable(f"could not start Java: {err}") from err

    def send(self, line: str) -> None:
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except OSError as err:  # a broken pipe: the process has died
            raise MeteorUnavailable(f"the Meteor Java process stopped: {self._error_tail()}") from err

    def receive(self) -> str:
        answer = self._proc.stdout.readline()
        if not answer:
            raise MeteorUnavailable(f"the Meteor Java process stopped: {self._error_tail()}")
        return answer.strip()

    def _error_tail(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self._proc.poll()}"

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._stderr.close()


_lock = threading.Lock()
_process: _MeteorProcess | None = None


def _shared_process() -> _MeteorProcess:
    global _process
    if _process is None or _process.owner != os.getpid() or not _process.alive():
        _process = _MeteorProcess()
        atexit.register(_process.close)
    return _process


def _field(text: str) -> str:
    # "|||" separates fields in Meteor's protocol (the official wrapper strips it from hypotheses)
    return " ".join(text.replace("|||", "").split())


def meteor_1_5(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus Meteor 1.5 of space-tokenised ``hypotheses`` against ``references`` (one list each)."""
    if not hypotheses:
        return 0.0
    with _lock:
        process = _shared_process()
        try:
            stats = []
            for hyp, refs in zip(hypotheses, references, strict=True):
                process.send(" ||| ".join(["SCORE", *map(_field, refs), _field(hyp)]))
                stats.append(process.receive())
            process.send(" ||| ".join(["EVAL", *stats]))
            for _ in stats:
                process.receive()  # the segment scores
            return _score(process.receive())  # the corpus score
        except BaseException:  # out of step with the process now: never reuse it
            _discard(process)
            raise


def _score(answer: str) -> float:
    try:
        return float(answer)
    except ValueError:
        raise MeteorUnavailable(f"Meteor answered {answer[:80]!r} where a score was due") from None


def _discard(process: _MeteorProcess) -> None:
    global _process
    process.close()
    _process = None
