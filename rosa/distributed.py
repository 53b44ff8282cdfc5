"""Data-parallel training helpers (torchrun, srun tasks); no-ops in a single process.

The loop keeps its single-process arithmetic and only shares the work of each optimizer step:

* every rank builds the same step (the data order is a function of (seed, step)) and takes its share
  of the step's micro-batches (:func:`shard`, micro-batch ``i`` goes to rank ``i % world``);
* the loss of each micro-batch is divided by the step's *global* number of target tokens, which every
  rank can count itself because it sees the whole step; no collective is needed for it;
* after the backward passes, :func:`all_reduce_grads` sums the gradients over ranks, so each rank
  holds exactly the gradient of the global batch (the same sum the single process accumulates) and the
  optimizer steps stay identical everywhere; :func:`all_reduce_sum` gives the logged loss;
* only rank 0 writes (run folder, status.json, the tracker, checkpoints): :func:`is_main`.

A method whose state is computed from data or randomness keeps every rank in agreement itself, with
these collectives: RoSA's mask statistics are summed over ranks before the masks are chosen
(``rosa.methods.rosa_robust.masks.GradientCollector``), and ROSA's resampled subspaces are broadcast
from rank 0 (``broadcast_tensors``). :func:`comm_device` says where a tensor must be for a collective.

Gradients are reduced by hand rather than through ``DistributedDataParallel``: the model keeps its
parameter names (checkpoints load in one process), methods that add or re-create parameters mid-run
need no re-wrapping, and the global-token normalisation stays exact with uneven shares.

A method that trains the base weights (full fine-tuning) is sharded instead, with FSDP2 (:func:`fsdp_wrap`): parameters,
gradients and optimizer state are split over the ranks and FSDP reduce-scatters the gradients itself
(summed, not averaged, so the global-token normalisation above still holds). Its all-gathers and
reduce-scatters are collectives, so every rank runs the same number of forward / backward passes
(the loop pads a short share with a zero-weighted micro-batch), and saving gathers full state dicts
on rank 0 (:func:`full_model_state`, :func:`full_optimizer_state`): checkpoints keep their format
and load in one process.
"""

from __future__ import annotations

import datetime
import os
from typing import Iterable, Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def _export_slurm_env() -> None:
    """Under ``srun`` with several tasks and no torchrun: RANK / WORLD_SIZE / LOCAL_RANK / MASTER_*
    from SLURM's variables, read by submitit's ``SlurmJobEnvironment`` (it also expands the node list,
    e.g. ``node[07-08]``, without calling scontrol). submitit's ``TorchDistributedEnvironment`` would
    do all of it but activates only inside submitit jobs (``SUBMITIT_EXECUTOR``), and a plain
    ``srun python train.py`` is one of our cases; CUDA_VISIBLE_DEVICES is left alone (each rank
    takes ``cuda:LOCAL_RANK``)."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1 or "SLURM_PROCID" not in os.environ:
        return
    from submitit.slurm.slurm import SlurmJobEnvironment

    slurm = SlurmJobEnvironment()
    os.environ["RANK"] = str(slurm.global_rank)
    os.environ["WORLD_SIZE"] = str(slurm.num_tasks)
    os.environ["LOCAL_RANK"] = str(slurm.local_rank)
    os.environ.setdefault("MASTER_ADDR", slurm.hostnames[0])
    os.environ.setdefault("MASTER_PORT", str(20000 + int(slurm.job_id.split("_")[0]) % 20000))


def init_from_env(device: torch.device | None = None) -> bool:
    """Join the process group described by the environment (torchrun or srun); True when distributed.

    NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo otherwise."""
    _export_slurm_env()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return True


def local_device(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:LOCAL_RANK`` when distributed."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence) -> list:
    """This rank's share of a step's micro-batches (round robin)."""
    return list(items[rank() :: world_size()])


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_scalar(value: float) -> float:
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` (in place) with rank ``src``'s values; shapes must already agree."""
    if not is_distributed():
        return
    for t in tensors:
        dist.broadcast(t.data if isinstance(t, torch.nn.Parameter) else t, src=src)


def all_reduce_grads(params: Iterable[torch.nn.Parameter], bucket_mb: float = 64.0) -> None:
    """Sum the gradients of ``params`` over ranks (missing gradients count as zeros)."""
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.Tensor] = []
    size = 0
    limit = bucket_mb * 2**20
    for p in params:
        bucket.append(p.grad)
        size += p.grad.numel() * p.grad.element_size()
        if size >= limit:
            _reduce_bucket(bucket)
            bucket, size = [], 0
    if bucket:
        _reduce_bucket(bucket)


def _reduce_bucket(grads: list[torch.Tensor]) -> None:
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in group:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


# ----------------------------------------------------------------------------- FSDP (full fine-tuning)
_FULL = dict(full_state_dict=True, cpu_offload=True)


def fsdp_wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """FSDP2 in place: shard every decoder layer (HF's ``_no_split_modules``), then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(device.type, (world_size(),))
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # sum over ranks (the loss is already globally normalised),
            module.set_force_sum_reduction_for_comms(True)  # as a plain SUM (gloo has no PREMUL_SUM)
    return model


def full_model_state(model: torch.nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Collective: the full (unsharded, CPU) tensors named ``names`` on rank 0, ``{}`` elsewhere."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(**_FULL))
    return {n: full[n] for n in names} if is_main() else {}


def load_full_model_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Every rank passes the full tensors (read from the checkpoint); each keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))


def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The optimizer's parameters in ``state_dict`` order (0, 1, ...), by name."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Collective: the full optimizer state on rank 0 (``{}`` elsewhere), keyed by parameter index
    like ``optimizer.state_dict()`` (torch.distributed.checkpoint keys it by name)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(**_FULL))
    if not is_main():
        return {}
    index = {n: i for i, n in enumerate(_param_names(model, optimizer))}
    return {
        "state": {index[n]: v for n, v in full["state"].items()},
        "param_groups": [dict(g, params=[index[n] for n in g["params"]]) for g in full["param_groups"]],
    }


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Inverse of :func:`full_optimizer_state`; every rank passes the full state."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _param_names(model, optimizer)
    by_name = {
        "state": {names[i]: v for i, v in state["state"].items()},
        "param_groups": [dict(g, params=[names[i] for i in g["params"]]) for g in state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def comm_device() -> torch.device:
    """Where a tensor must be for a collective: the rank's GPU under NCCL, else the CPU (gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree_stop(stop_signal: int | None) -> int | None:
    """A stop signal seen by any rank stops every rank at the same step (the largest signal number)."""
    if not is_distributed():
        return stop_signal
    t = torch.tensor([stop_signal or 0], dtype=torch.int64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) or None


# ----------------------------------------------------------------------------- the loop's one code path
class Replicated:
    """Every rank holds the whole model and the same optimizer state; gradients are summed by hand
    (:func:`all_reduce_grads`). In one process every call is the plain single-process operation.
    The loop calls these on every rank, the same way, whatever the strategy."""

    sharded = False  # True: FSDP owns the parameters (cast them before wrap, never after)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return model

    def share(self, micro_batches: Sequence) -> list:
        """This rank's micro-batches of the step, each with its loss weight."""
        return [(batch, 1.0) for batch in shard(micro_batches)]

    def reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        all_reduce_grads(params)  # the sum of the ranks' shares = the global batch's gradient

    def model_state(self, model: torch.nn.Module, tensors: dict) -> dict:
        return tensors

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        return optimizer.state_dict()

    def load_model_state(self, model: torch.nn.Module, tensors: dict, method) -> None:
        method.load_state_dict(model, tensors)

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)


class Sharded(Replicated):
    """FSDP2 (full fine-tuning over several ranks): parameters, gradients and optimizer state split
    over the ranks; FSDP reduce-scatters the gradients itself; state is gathered in full on rank 0
    (collectives: every rank calls them)."""

    sharded = True

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return fsdp_wrap(model, device)

    def share(self, micro_batches: Sequence) -> list:
        # FSDP's gathers are collectives: pad a short share with zero-weighted passes
        share = super().share(micro_batches)
        return share + [(micro_batches[0], 0.0)] * (-(-len(micro_batches) // world_size()) - len(share))

    def reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        return None

    def model_state(self, model: torch.nn.Module, tensors: dict) -> dict:
        return full_model_state(model, tensors)

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        return full_optimizer_state(model, optimizer)

    def load_model_state(self, model: torch.nn.Module, tensors: dict, method) -> None:
        load_full_model_state(model, tensors)  # each rank keeps its shard

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        load_full_optimizer_state(model, optimizer, state)


def strategy(trains_base_weights: bool) -> Replicated:
    """Sharded for a method that trains the base weights (full fine-tuning) over several ranks; the
    adapter methods stay replicated (small state; parameters may be re-created mid-run)."""
    return Sharded() if trains_base_weights and is_distributed() else Replicated()
