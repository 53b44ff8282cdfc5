"""Data parallelism on CPU (gloo, 2 processes): the same per-step losses and weights as one process
with the same global batch. Each rank takes its share of every step's micro-batches; gradients are
summed over ranks (rosa/training/distributed.py)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rosa.training import distributed

STEPS = 3
OVERRIDES = ["model=tiny", "dataset=e2e", "fnmodel=lora", "fnmodel.dropout=0.0", "train.batch_size=8",
             "train.micro_batch_size=2", f"train.max_steps={STEPS}", "device=cpu", "dataset.sample_rows.train=64",
             "dataset.sample_rows.validation=8", "dataset.sample_rows.test=8"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _steps(overrides: list[str], run_dir: Path) -> dict:
    from rosa.config import compose, validate
    from rosa.training.loop import Trainer

    trainer = Trainer(validate(compose(overrides)), run_dir)
    losses = [trainer.train_step()["loss"] for _ in range(STEPS)]
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return {"losses": losses, "checksum": float(sum(t.double().abs().sum() for t in trainable.values())),
            "first": trainable[sorted(trainable)[0]].flatten()[:8].tolist()}


def _worker(rank: int, world: int, port: int, overrides: list[str], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert distributed.init_from_env(torch.device("cpu"))
    try:
        result = _steps(overrides, Path(out) / "run")
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        distributed.shutdown()


def _compare(overrides: list[str], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single = _steps(overrides, tmp_path / "single")
    mp.start_processes(_worker, args=(2, _free_port(), overrides, str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        multi = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert multi["losses"] == pytest.approx(single["losses"], rel=1e-5, abs=1e-6)
        assert multi["checksum"] == pytest.approx(single["checksum"], rel=1e-5)
        assert multi["first"] == pytest.approx(single["first"], rel=1e-4, abs=1e-6)


def test_helpers_are_no_ops_in_one_process():
    assert not distributed.is_distributed() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    t = torch.ones(3)
    assert distributed.all_reduce_sum(t) is t and distributed.all_reduce_scalar(2.5) == 2.5
    assert distributed.agree_stop(None) is None


def test_lora_two_ranks_match_one_process(tmp_path):
    _compare(OVERRIDES, tmp_path)


def test_uneven_shares_match(tmp_path):
    """3 micro-batches per step on 2 ranks (2 + 1): still the global batch's gradient."""
    overrides = [o for o in OVERRIDES if not o.startswith("train.batch_size")] + ["train.batch_size=6"]
    _compare(overrides, tmp_path)
