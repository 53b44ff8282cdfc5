"""RoSA's sparse masks: which entries of each adapted weight the sparse adapter S may change.

Per adapted matrix W0 (n x m = out x in) the mask is the top-k, k = int(density * n * m), of a score:

- ``grad-fisher`` (RoSA's default): the mean over micro-batches of (G^T X)^2, where X [tokens, m] is
  the layer's input and G [tokens, n] the gradient of the loss w.r.t. its output, so G^T X is the
  micro-batch's gradient of the dense weight (the empirical diagonal Fisher of the paper's README);
- ``grad-mean``: |mean over micro-batches of G^T X|;
- ``weight``: |W0| (needs no gradients);
- ``random``: uniform at random from a seeded generator (needs no gradients).

G is the gradient of the training loop's loss itself, so the statistic weights tokens exactly as the
loss does (``train.loss_norm``): with ``tokens`` each micro-batch's G^T X is the gradient of its summed
token losses over the step's target-token count; with ``examples`` (the RoSA presets) it is the sum
over its examples of each one's mean-token-loss gradient over the step's example count, so at
micro-batch 1 the statistic is RoSA's mean over 32 examples of (gradient of the example's HF loss / 32)^2.

Gradients are formed from X and G by a forward hook and a hook on the output's gradient, never from
``weight.grad``: the base weights are frozen (and may be 4-bit), so they have none. When nothing
before a layer requires grad (rank 0: no LoRA path yet), the collector makes the layer's input a
leaf that requires grad, so the loss has a grad path and backward reaches every hook; that cuts no
gradient, since such an input has no trainable history.

Masks are saved as CSR structure (``<layer>.row_offsets`` int32, ``<layer>.col_indices``) in one
``masks.safetensors``, written atomically; ``load_masks`` reads it back as :class:`CSRMatrix` es.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from rosa import distributed
from rosa.atomic import atomic_write, tensor_bytes
from rosa.kernels import CSRMatrix
from rosa.methods.base import dense_weight

log = logging.getLogger(__name__)

GRADIENT_CRITERIA = ("grad-fisher", "grad-mean")
MASKS_FILE = "masks.safetensors"


def nnz_for(density: float, n: int, m: int) -> int:
    """Nonzeros of one n x m sparse adapter: int(density * n * m), as RoSA."""
    return int(density * n * m)


def top_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask (same shape as ``score``) of its k largest entries."""
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k > 0:
        mask[torch.topk(score.reshape(-1).float(), k, sorted=False).indices] = True
    return mask.view(score.shape)


# ----------------------------------------------------------------------------- gradient statistics
def _in_backward() -> bool:
    """Whether autograd is running a backward pass (where a non-reentrant checkpoint recomputes)."""
    return torch._C._current_graph_task_id() != -1


class GradientCollector:
    """Accumulates per-micro-batch dense weight gradients G^T X of some layers.

    ``attach`` installs the hooks. Between ``begin_step()`` and ``end_step()`` (one optimizer step)
    each layer adds one statistic per micro-batch (its gradient summed over the layer's forward calls,
    closed by the next micro-batch's forward or by ``end_step``), until
    ``samples`` micro-batches of the run have been counted; ``scores()`` returns the means and
    ``detach`` removes the hooks. Accumulators are fp32 on ``device`` (CPU by default, to bound GPU
    memory: Llama-2-7B's 224 projections take 24 GiB).

    Data parallel (``rosa.distributed``): rank r runs micro-batches r, r + W, ... of each
    step, so its j-th backward in a step is the step's micro-batch j W + r, which is how the
    ``samples`` cap is applied exactly. ``end_step`` sums the ranks' statistics; between steps rank 0
    holds the running total (it alone writes checkpoints) and the other ranks start again from zero,
    and after the last step every rank holds the total, so all choose the same masks.
    """

    def __init__(self, layers: dict[str, nn.Module], criterion: str, samples: int, device: str | None = "cpu"):
        if criterion not in GRADIENT_CRITERIA:
            raise ValueError(f"criterion {criterion!r} needs no gradients; choose one of {GRADIENT_CRITERIA}")
        self.layers, self.criterion, self.samples = layers, criterion, samples
        self.device = device  # None: the layer's own device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts = {name: 0 for name in layers}  # micro-batches in ``sums`` (all ranks, after end_step)
        self.seen = 0  # micro-batches of the completed steps (all ranks)
        self.calls = {name: 0 for name in layers}  # this rank's backward calls in the current step
        self.skipped = 0
        self._open: set[str] = set()  # layers with gradients of an unclosed micro-batch
        self._pending: dict[str, torch.Tensor] = {}  # that micro-batch's summed G^T X so far
        self._handles: list = []

    # -- lifecycle
    def attach(self) -> "GradientCollector":
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_pre_hook(_input_requires_grad))
            self._handles.append(layer.register_forward_hook(self._forward_hook(name)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def begin_step(self) -> None:
        self.calls = {name: 0 for name in self.layers}
        self._open.clear()
        self._pending.clear()

    def end_step(self) -> None:
        """Close one optimizer step: count its micro-batches (over all ranks), sum the ranks' statistics."""
        for name in list(self._open):
            self._close(name)
        self.seen += int(distributed.all_reduce_scalar(float(max(self.calls.values(), default=0))))
        if distributed.is_distributed():
            self._reduce(keep_on_all=self.done)

    @property
    def done(self) -> bool:
        return self.seen >= self.samples

    @property
    def collected(self) -> int:
        return min(self.counts.values(), default=0)

    def accumulator_bytes(self) -> int:
        return sum(4 * layer.out_features * layer.in_features for layer in self.layers.values())

    # -- hooks
    def _forward_hook(self, name: str):
        def hook(module, args, output):
            if not (args and torch.is_grad_enabled() and isinstance(output, torch.Tensor) and output.requires_grad):
                return  # evaluation, or the no-grad first pass of a reentrant checkpoint
            if not _in_backward():  # a new micro-batch's forward (not a checkpoint's recomputation)
                self._close(name)
            x = args[0].detach()
            output.register_hook(lambda grad: self._gather(name, x, grad))

        return hook

    @torch.no_grad()
    def _gather(self, name: str, x: torch.Tensor, grad: torch.Tensor) -> None:
        """Add one forward call's G^T X to the micro-batch's gradient of layer ``name``. A micro-batch
        may call a layer more than once (the shared prompt prefix, then the suffixes:
        ``rosa.models.shared_prefix``); its gradient is the sum over the calls, so the statistic is
        formed when the micro-batch is closed (the next micro-batch's forward, or ``end_step``)."""
        self._open.add(name)
        if self._next_index(name) >= self.samples:
            return
        g = grad.reshape(-1, grad.shape[-1]).float()
        part = g.t() @ x.reshape(-1, x.shape[-1]).float()  # this call's share of the dense weight gradient [n, m]
        pending = self._pending.get(name)
        self._pending[name] = part if pending is None else pending.add_(part)

    def _close(self, name: str) -> None:
        if name in self._open:
            self._open.discard(name)
            self._accumulate(name, self._pending.pop(name, None))

    def _next_index(self, name: str) -> int:
        """The run-wide index of this rank's current micro-batch statistic of layer ``name``."""
        return self.seen + self.calls[name] * distributed.world_size() + distributed.rank()

    @torch.no_grad()
    def _accumulate(self, name: str, stat: torch.Tensor | None) -> None:
        """Add one micro-batch's dense weight gradient ``stat`` [n, m] (its statistic) to the sums
        (None: past the ``samples`` cap, only counted)."""
        self.calls[name] += 1
        if stat is None:
            return
        if not torch.isfinite(stat).all():  # an fp16 overflow the grad scaler will skip
            self.skipped += 1
            return
        if self.criterion == "grad-fisher":
            stat = stat.square_()
        stat = stat.to(self.device or stat.device)
        if name in self.sums:
            self.sums[name] += stat
        else:
            self.sums[name] = stat
        self.counts[name] += 1

    def _reduce(self, keep_on_all: bool) -> None:
        """Sum sums and counts over ranks (through the communication device; NCCL needs CUDA)."""
        for name, layer in self.layers.items():
            total = self.sums.get(name)
            if total is None:
                total = torch.zeros(
                    layer.out_features, layer.in_features, device=self.device or layer.base.weight.device
                )
            comm = total.to(distributed.comm_device())
            distributed.all_reduce_sum(comm)
            count = torch.tensor([float(self.counts[name])], device=comm.device)
            distributed.all_reduce_sum(count)
            if keep_on_all or distributed.is_main():
                self.sums[name], self.counts[name] = comm.to(total.device), int(count.item())
            else:
                self.sums.pop(name, None)
                self.counts[name] = 0

    # -- checkpointing a collection in progress (rank 0's state holds the total so far)
    def state(self) -> dict[str, torch.Tensor]:
        out = {"seen": torch.tensor(self.seen)}
        for name, total in self.sums.items():
            out[f"{name}.sum"] = total
            out[f"{name}.count"] = torch.tensor(self.counts[name])
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.seen = int(state["seen"])
        if not distributed.is_main():
            return  # the total lives on rank 0 only
        for key, value in state.items():
            name, _, kind = key.rpartition(".")
            if kind == "count":
                self.counts[name] = int(value)
            elif kind == "sum":
                self.sums[name] = value.to(self.device or value.device, torch.float32).clone()

    # -- result
    def scores(self) -> dict[str, torch.Tensor]:
        """Per layer: the mean statistic (grad-fisher) or its absolute value (grad-mean)."""
        missing = [n for n, c in self.counts.items() if c == 0]
        if missing and self.skipped:
            raise RuntimeError(
                f"every micro-batch statistic of {len(missing)} adapted layers (e.g. {missing[0]}) "
                "was non-finite during mask collection (fp16 overflow?); no mask can be built"
            )
        if missing:
            raise RuntimeError(
                f"no gradient reached {len(missing)} adapted layers (e.g. {missing[0]}) "
                "during mask collection; are they used in the forward pass?"
            )
        out = {}
        for name, total in self.sums.items():
            mean = total / self.counts[name]
            out[name] = mean.abs_() if self.criterion == "grad-mean" else mean
        return out


def _input_requires_grad(module, args):
    """Forward pre-hook: give the loss a grad path through this layer when nothing else does."""
    x = args[0] if args else None
    if torch.is_grad_enabled() and isinstance(x, torch.Tensor) and not x.requires_grad and x.is_floating_point():
        return (x.detach().requires_grad_(True),) + tuple(args[1:])
    return None


# ----------------------------------------------------------------------------- masks
def masks_from_scores(scores: dict[str, torch.Tensor], density: float) -> dict[str, CSRMatrix]:
    out = {}
    for name, score in scores.items():
        n, m = score.shape
        out[name] = CSRMatrix.from_mask(top_k_mask(score, nnz_for(density, n, m)))
    return out


def weight_masks(layers: dict[str, nn.Module], density: float) -> dict[str, CSRMatrix]:
    return masks_from_scores({n: dense_weight(l.base, torch.float32).abs() for n, l in layers.items()}, density)


def random_masks(layers: dict[str, nn.Module], density: float, seed: int) -> dict[str, CSRMatrix]:
    generator = torch.Generator().manual_seed(seed)
    return masks_from_scores(
        {n: torch.rand(l.out_features, l.in_features, generator=generator) for n, l in layers.items()}, density
    )


def save_masks(path: Path, masks: dict[str, CSRMatrix], metadata: dict | None = None) -> Path:
    """One safetensors file: ``<layer>.row_offsets`` / ``<layer>.col_indices`` per layer, shapes
    and ``metadata`` in the header. Written atomically."""
    path = Path(path)
    tensors, shapes = {}, {}
    for name, csr in masks.items():
        tensors[f"{name}.row_offsets"] = csr.row_offsets.contiguous().cpu()
        tensors[f"{name}.col_indices"] = csr.col_indices.contiguous().cpu()
        shapes[name] = list(csr.shape)
    header = {"shapes": json.dumps(shapes), **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header), needed_bytes=tensor_bytes(tensors))
    return path


def load_masks(path: str | Path) -> tuple[dict[str, CSRMatrix], dict]:
    """(masks by layer name, metadata) from :func:`save_masks`'s file, or a run folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / MASKS_FILE
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        shapes = json.loads(header["shapes"])
        masks = {
            name: CSRMatrix.from_buffers(
                {
                    "row_offsets": f.get_tensor(f"{name}.row_offsets"),
                    "col_indices": f.get_tensor(f"{name}.col_indices"),
                },
                shape,
            )
            for name, shape in shapes.items()
        }
    metadata = {k: json.loads(v) for k, v in header.items() if k != "shapes"}
    return masks, metadata


def read_mask_file(
    path: str | Path, shapes: dict[str, tuple[int, int]], density: float | None
) -> tuple[dict[str, CSRMatrix], dict]:
    """The masks and metadata of ``fnmodel.mask_path`` (a masks file or a run folder holding one),
    checked: readable, one mask per target layer of its (out, in) in ``shapes``, and ``density``'s
    nonzero count per layer unless ``density`` is None. ValueError: one line naming the key."""
    key = f"fnmodel.mask_path={str(path)!r}"
    file = Path(path) / MASKS_FILE if Path(path).is_dir() else Path(path)
    if not Path(path).exists():
        raise ValueError(f"{key} does not exist; allowed: a {MASKS_FILE} file or a run folder holding one")
    try:
        masks, metadata = load_masks(file)
    except Exception as err:  # noqa: BLE001 - safetensors, JSON and missing-key errors alike: one line
        raise ValueError(
            f"{key}: {file} is unreadable ({type(err).__name__}: {err}".splitlines()[0]
            + f"); allowed: a {MASKS_FILE} written by a rosa-robust or spa run (or its run folder)"
        ) from None
    wrong = sorted(n for n in masks if n in shapes and tuple(masks[n].shape) != tuple(shapes[n]))
    if set(masks) != set(shapes) or wrong:
        missing, extra = sorted(set(shapes) - set(masks)), sorted(set(masks) - set(shapes))
        raise ValueError(
            f"{key} does not fit the target layers: missing {missing[:3]}, unexpected {extra[:3]}, "
            f"other shape {wrong[:3]}; allowed: masks saved for this model and fnmodel.target_modules"
        )
    if density is not None and any(c.nnz != nnz_for(density, *c.shape) for c in masks.values()):
        nnz, size = sum(c.nnz for c in masks.values()), sum(c.shape[0] * c.shape[1] for c in masks.values())
        raise ValueError(
            f"{key} has density {nnz / size:.4g} ({nnz} nonzeros), not fnmodel.density={density!r}; "
            "allowed: a masks file of that density, or fnmodel.density=null to take the density "
            "from the file"
        )
    return masks, metadata


def gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**27 else f"{n_bytes / 2**20:.1f} MiB"


__all__ = [
    "GRADIENT_CRITERIA",
    "MASKS_FILE",
    "GradientCollector",
    "gib",
    "load_masks",
    "masks_from_scores",
    "nnz_for",
    "random_masks",
    "read_mask_file",
    "save_masks",
    "top_k_mask",
    "weight_masks",
]
