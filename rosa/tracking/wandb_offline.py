"""``tracker=wandb``: the run's numbers in a W&B run, offline by default (``wandb sync`` uploads it later).

One W&B run per run folder: named after it, its config the flat run config, its id kept in the run's
``status.json`` (``wandb_run_id``). Each process that logs (the training, each resume, an evaluation)
writes its own folder ``<tracker.dir or the run folder>/wandb/offline-run-<time>-<id>[-<n>]``; ``wandb sync``
uploads the folders of one id into one run, in the order they started. A run that starts again from
step 0 removes its earlier attempt's offline folders and takes a new id.

W&B's history takes steps in increasing order only, and offline nothing tells a new process what an
earlier one logged: so a resume reads the run's earlier offline files (:func:`history_steps`) and
logs only the steps after the last one they hold. The steps between the checkpoint and the kill stay
as the killed attempt logged them (the same losses: a resume reproduces them). For the same reason the
final numbers (the hyperparameters' metrics, the evaluation's ``eval/<split>/<metric>``) go to the run's
summary, W&B's place for a run's final values, not to its history at a step already passed.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import struct
import zlib
from pathlib import Path

from rosa.runs import read_status, update_status
from rosa.tracking.base import Tracker

log = logging.getLogger("rosa")
RUN_ID_KEY = "wandb_run_id"  # in status.json


class WandbTracker(Tracker):
    def __init__(self, cfg, run_dir: Path, start: int | None, config: dict):
        import wandb

        run_dir = Path(run_dir)
        self.folder = Path(cfg.dir).expanduser() if cfg.dir else run_dir  # W&B writes into <folder>/wandb
        self.folder.mkdir(parents=True, exist_ok=True)
        run_id = (read_status(run_dir) or {}).get(RUN_ID_KEY)
        if start is None or not run_id:
            if run_id:
                remove_offline_runs(self.folder, run_id)
            run_id = secrets.token_hex(4)
            update_status(run_dir, **{RUN_ID_KEY: run_id})
        self.held = max(history_steps(self.folder, run_id), default=-1)  # the last step W&B holds
        self.run = wandb.init(
            project=cfg.project,
            dir=str(self.folder),
            id=run_id,
            name=run_dir.name,
            config=config,
            resume="allow",
            mode=cfg.mode,
            settings=wandb.Settings(silent=True, console="off"),  # train.log keeps the console
        )
        self.closed = False

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if step > self.held:
            self.run.log(dict(values), step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        import wandb

        if step > self.held:
            self.run.log({tag: wandb.Table(columns=["text"], data=[[text]])}, step=step)

    def results(self, step: int, values: dict[str, float]) -> None:
        self.run.summary.update(values)

    def hparams(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        self.run.config.update(hparams, allow_val_change=True)
        self.run.summary.update(metrics)

    def close(self, ok: bool = True) -> None:
        import wandb

        if not self.closed:
            self.closed = True
            self.run.finish(exit_code=0 if ok else 1)
            # W&B's service process writes the files after finish() returns; teardown waits for it, so
            # they are complete for whoever reads them next (a resume, the evaluation's tracker, a test)
            wandb.teardown()


def run_files(folder: Path, run_id: str) -> list[Path]:
    """The W&B files of run ``run_id`` below ``folder`` (one per process that logged), oldest first.

    W&B names a process's folder ``[offline-]run-<YYYYmmdd_HHMMSS>-<id>``, with ``-<n>`` added when a
    folder of that name exists (a second process of the run in the same second)."""
    name = re.compile(rf"(?:offline-)?run-(\d{{8}}_\d{{6}})-{re.escape(run_id)}(?:-(\d+))?")
    found = []
    for path in Path(folder).glob(f"wandb/*/run-{run_id}.wandb"):
        match = name.fullmatch(path.parent.name)
        if match:
            found.append(((match[1], int(match[2] or 0)), path))
    return [path for _, path in sorted(found)]


def remove_offline_runs(folder: Path, run_id: str) -> None:
    """Remove the offline folders of run ``run_id``: an earlier attempt of a run that starts again."""
    stale = [path.parent for path in run_files(folder, run_id) if path.parent.name.startswith("offline-run-")]
    for path in stale:
        shutil.rmtree(path)
    if stale:
        log.info("removed %d W&B offline folder(s) of an earlier attempt (the run starts from step 0)", len(stale))


def history_steps(folder: Path, run_id: str) -> list[int]:
    """The steps of every history row in the W&B files of run ``run_id``."""
    return [record.history.step.num for path in run_files(folder, run_id) for record in read_records(path, "history")]


# W&B's files use LevelDB's log format (blocks of 32 KiB; each piece of a record has a 7-byte header:
# CRC-32 of its type byte and data, length, type) after a 7-byte file header; records are protobuf.
BLOCK, HEADER, FILE_HEADER = 32768, 7, b":W&B\xe1\xbe\x00"
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path, kind: str | None = None):
    """The records of a W&B file (of one ``kind``, e.g. "history", "run", "summary"); a torn last
    record (a killed process) ends the reading."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if not data.startswith(FILE_HEADER):
        raise ValueError(f"{path} is not a W&B file")
    at, pieces = len(FILE_HEADER), []
    while at + HEADER <= len(data):
        if BLOCK - at % BLOCK < HEADER:  # a block's tail too short for a header is padding
            at += BLOCK - at % BLOCK
            continue
        crc, length, piece_type = struct.unpack("<IHB", data[at : at + HEADER])
        piece = data[at + HEADER : at + HEADER + length]
        at += HEADER + length
        if piece_type == 0 and length == 0:
            continue  # zeros: padding
        if len(piece) < length or zlib.crc32(bytes([piece_type]) + piece) != crc:
            return
        pieces = [piece] if piece_type in (FULL, FIRST) else [*pieces, piece]
        if piece_type in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            if kind is None or record.WhichOneof("record_type") == kind:
                yield record
