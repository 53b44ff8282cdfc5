"""Write a benchmark's output into docs/benchmarks.md, between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` (the section is added at the end when the markers are missing), with the
command, the machine (CPU model, cores, torch version, GPU if any) and the date. Tables in that file
are therefore produced by the scripts, never typed by hand. Each section ends with a ``Commit:``
line: the short hash of HEAD when the run started, and whether tracked files outside docs/ had
uncommitted changes (named), so a stale or unreproducible section can be seen as such.

Use from a bench script (a ``--record`` flag, stripped before argparse sees it)::

    from record import recording
    if __name__ == "__main__":
        with recording("kernels"):      # tees stdout; writes the section on success when --record is given
            main()

or directly: ``record.write("name", text, command="python bench/x.py")``.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the stamp comes from rosa.provenance
    sys.path.insert(0, str(ROOT))
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    import torch

    from rosa.provenance import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [
        f"CPU {cpu_model()}",
        f"{cores} cores",
        f"{torch.get_num_threads()} torch threads",
        f"torch {torch.__version__}",
    ]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        parts.append(f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}")
    else:
        parts.append("no GPU")
    return ", ".join(parts)


def commit_stamp(root: Path = ROOT) -> str:
    """``Commit: <short hash> (clean)``, or ``(dirty: <files>)`` when tracked files outside docs/ differ
    from HEAD (staged or not; ``rosa.provenance``). docs/ is left out: recording a section edits it.
    Untracked files are not code the run imported from the repository's history, so not listed."""
    from rosa.provenance import code_version, describe

    return f"Commit: {describe(code_version(root))}"


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def section(
    name: str,
    text: str,
    command: str,
    fenced: bool = True,
    stamp: str | None = None,
    load_at_start: float | None = None,
) -> str:
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    body = f"```\n{text.rstrip()}\n```\n" if fenced else f"{text.rstrip()}\n"
    # other jobs on a shared machine slow a run: the 1-minute load average says how busy it was
    busy = (f"{load_at_start:.1f} at the start, " if load_at_start is not None else "") + f"{load():.1f} at the end"
    return (
        f"<!-- bench:{name} -->\n"
        f"Command: `{command}`  \nMachine: {machine()}  \nLoad average: {busy}  \nDate: {date}\n\n"
        f"{body}\n"
        f"{stamp or commit_stamp()}\n"
        f"<!-- /bench:{name} -->"
    )


def write(
    name: str,
    text: str,
    command: str | None = None,
    doc: Path = DOC,
    fenced: bool = True,
    stamp: str | None = None,
    load_at_start: float | None = None,
) -> Path:
    """Replace (or append) the ``name`` section of ``doc`` with ``text`` (a script's output).
    ``stamp``: the ``Commit:`` line taken when the run started (default: taken now)."""
    if command is None:
        argv = [a for a in sys.argv if a != "--record"]
        script = Path(argv[0]).resolve()
        try:
            argv[0] = str(script.relative_to(ROOT))
        except ValueError:
            pass
        command = "python " + " ".join(shlex.quote(a) for a in argv) + " --record"
    doc.parent.mkdir(parents=True, exist_ok=True)
    current = doc.read_text() if doc.exists() else "# Benchmarks\n"
    updated = replace_section(current, name, section(name, text, command, fenced, stamp, load_at_start))
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(updated)
    tmp.replace(doc)
    return doc


def replace_section(current: str, name: str, block: str) -> str:
    """``current`` with its ``name`` section (markers included) replaced by ``block`` (which carries
    the markers itself), or ``block`` appended under a ``## name`` heading when there is none. A page
    holds the place of a section not recorded yet with ``<!-- bench-slot:NAME -->`` ... ``<!--
    /bench-slot:NAME -->`` (a "not run" note between them, never a figure): the block replaces it. The
    text outside the markers, other sections included, is kept byte for byte."""
    pattern = re.compile(rf"<!-- (bench|bench-slot):{re.escape(name)} -->.*?<!-- /\1:{re.escape(name)} -->", re.S)
    if pattern.search(current):
        return pattern.sub(lambda _: block, current, count=1)
    return current.rstrip("\n") + f"\n\n## {name}\n\n{block}\n"


class _Tee(io.TextIOBase):
    def __init__(self, stream):
        self.stream, self.buffer_ = stream, io.StringIO()

    def write(self, s):
        self.stream.write(s)
        self.buffer_.write(s)
        return len(s)

    def flush(self):
        self.stream.flush()


@contextmanager
def recording(name: str, flag: str = "--record", doc: Path = DOC):
    """Run the body; if ``flag`` was on the command line (it is removed from sys.argv first), tee
    stdout and write it as section ``name`` of ``doc`` when the body succeeds. The commit is read
    before the body runs: the code that ran is the code of that moment."""
    enabled = flag in sys.argv
    if not enabled:
        yield
        return
    sys.argv = [a for a in sys.argv if a != flag]
    stamp, busy = commit_stamp(), load()
    argv = list(sys.argv)
    try:
        argv[0] = str(Path(argv[0]).resolve().relative_to(ROOT))
    except ValueError:
        pass
    command = "python " + " ".join(shlex.quote(a) for a in argv) + f" {flag}"
    tee = _Tee(sys.stdout)
    old, sys.stdout = sys.stdout, tee
    try:
        yield
    finally:
        sys.stdout = old
    out = write(name, tee.buffer_.getvalue(), command, doc=doc, stamp=stamp, load_at_start=busy)
    print(f"recorded section '{name}' in {out}")
