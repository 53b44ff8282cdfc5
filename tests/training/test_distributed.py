"""Data parallelism on CPU (gloo, 2 processes): the same per-step losses and weights as one process
with the same global batch. Each rank takes its share of every step's micro-batches; gradients are
summed over ranks (rosa/distributed.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rosa import distributed
from tests.conftest import join_as_client, rendezvous_port

STEPS = 3
OVERRIDES = [
    "model=tiny",
    "dataset=e2e",
    "fnmodel=lora",
    "fnmodel.dropout=0.0",
    "train.batch_size=8",
    "train.micro_batch_size=2",
    f"train.max_steps={STEPS}",
    "device=cpu",
    "dataset.sample_rows.train=64",
    "dataset.sample_rows.validation=8",
    "dataset.sample_rows.test=8",
]


def _steps(overrides: list[str], run_dir: Path, resume_at: int | None = None) -> dict:
    """STEPS optimizer steps; with ``resume_at``, checkpoint there and go on in a fresh, resumed Trainer."""
    from rosa.config import compose, validate
    from rosa.training.loop import Trainer

    run = validate(compose(overrides))
    trainer = Trainer(run, run_dir)
    losses, norms = [], []
    for i in range(STEPS):
        if i == resume_at:
            trainer.save()
            torch.distributed.barrier()  # rank 0 has written the checkpoint
            trainer = Trainer(run, run_dir)
            assert trainer.resume() and trainer.step == i
        stats = trainer.train_step()
        trainer.step += 1
        trainer.phase_step += 1
        losses.append(stats["loss"])
        norms.append(stats["grad_norm"])
    trainable = {n: _full(p) for n, p in trainer.model.named_parameters() if p.requires_grad}
    sharded = any(hasattr(p, "full_tensor") for p in trainer.model.parameters())
    return {
        "losses": losses,
        "norms": norms,
        "sharded": sharded,
        "checksum": float(sum(t.double().abs().sum() for t in trainable.values())),
        "first": trainable[sorted(trainable)[0]].flatten()[:8].tolist(),
        "prefix": [trainer.prefix_length(b) for b in trainer.batches.step(0)],
    }


def _full(p: torch.Tensor) -> torch.Tensor:
    """A parameter's whole value (FSDP holds a shard: gathering it is a collective)."""
    return p.detach().full_tensor() if hasattr(p, "full_tensor") else p.detach().clone()


def _worker(rank: int, world: int, port: int, overrides: list[str], out: str, resume_at: int | None = None) -> None:
    join_as_client(rank, world, port)
    torch.set_num_threads(1)
    assert distributed.init_from_env(torch.device("cpu"))
    try:
        result = _steps(overrides, Path(out) / "run", resume_at)
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        distributed.shutdown()


def _compare(
    overrides: list[str], tmp_path: Path, resume_at: int | None = None, sharded: bool = False
) -> tuple[dict, dict]:
    torch.set_num_threads(1)
    single = _steps(overrides, tmp_path / "single")
    with rendezvous_port() as port:
        mp.start_processes(_worker, args=(2, port, overrides, str(tmp_path), resume_at), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        multi = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert multi["sharded"] == sharded  # FSDP for fft only
        assert multi["losses"] == pytest.approx(single["losses"], rel=1e-5, abs=1e-6)
        assert multi["norms"] == pytest.approx(single["norms"], rel=1e-5, abs=1e-6)
        assert multi["checksum"] == pytest.approx(single["checksum"], rel=1e-5)
        assert multi["first"] == pytest.approx(single["first"], rel=1e-4, abs=1e-6)
    return single, multi


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


FFT = [o for o in OVERRIDES if not o.startswith("fnmodel")] + ["fnmodel=fft"]


def test_fft_fsdp_two_ranks_match_one_process(tmp_path):
    """Full fine-tuning is sharded with FSDP2; 3 micro-batches on 2 ranks (the short share is padded)."""
    _compare([o for o in FFT if not o.startswith("train.batch_size")] + ["train.batch_size=6"], tmp_path, sharded=True)


def test_fft_fsdp_resume_matches(tmp_path):
    """Gathered checkpoint at step 1, resumed (re-sharded) by fresh Trainers: same losses as no stop."""
    _compare(FFT, tmp_path, resume_at=1, sharded=True)
    from rosa.training import checkpoint as ckpt
    from tests.training.faults import latest_checkpoint

    tensors, trainer_state, _ = ckpt.load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert set(trainer_state["optimizer"]["state"]) == set(range(len(tensors)))  # index-keyed, full shapes


SHARED_PREFIX = [o for o in OVERRIDES if not o.startswith("dataset=")] + ["dataset=viggo"]


@pytest.mark.parametrize("method", ["lora", "fft"])
def test_shared_prefix_two_ranks_match_one_process(tmp_path, method):
    """ViGGO's prompt: every micro-batch runs its common prefix once (train.shared_prefix=auto), in
    each rank's own forward (replicated: lora). FSDP-sharded training (fft on 2 ranks) takes the plain
    path, and matches the one process that shares the prefix."""
    overrides = (
        [o for o in SHARED_PREFIX if not o.startswith("fnmodel")]
        + [f"fnmodel={method}"]
        + (["fnmodel.dropout=0.0"] if method == "lora" else [])
    )
    single, multi = _compare(overrides, tmp_path, sharded=method == "fft")
    assert min(single["prefix"]) > 500  # the byte-level tokenizer: the instruction is ~600 tokens
    assert min(multi["prefix"]) > 500 if method == "lora" else set(multi["prefix"]) == {0}


def test_srun_environment_is_exported_for_torch(monkeypatch):
    from rosa import distributed

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # records the current state, so the values exported below are undone
        monkeypatch.delenv(key)
    slurm = dict(
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="4",
        SLURM_PROCID="3",
        SLURM_LOCALID="1",
        SLURM_JOB_NODELIST="node[07-08]",
        SLURM_JOB_NUM_NODES="2",
        SLURM_NODEID="1",
    )
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    distributed._export_slurm_env()
    assert {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")} == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "node07",
        "MASTER_PORT": str(20000 + 4242),
    }
