"""RoSA's schedule as one state machine, its state and resume (the package docstring has the math).

Phases (``Phase``; the value is what checkpoints and ``describe()`` hold):

    prepare:  density 0                         -> LORA      (plain LoRA, for good)
              fnmodel.mask_path                 -> SPARSE    (masks from the file)
              mask_criterion weight | random    -> SPARSE    (masks at once, no gradients)
              rank 0 or warmup_steps 0          -> COLLECT
              otherwise                         -> WARMUP
    WARMUP   -> COLLECT   before the step at which the warm-up is over (``warmup_length``)
    COLLECT  -> SPARSE    after the step that completes ``mask_samples`` micro-batches: masks built,
                          saved, and the restart (or, restart=false, the optimizer rebuilt)

``_enter`` is the only place the phase changes, and it refuses any other transition.
"""

from __future__ import annotations

import enum
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rosa import distributed
from rosa.kernels import CSRMatrix, resolve_impl
from rosa.methods.base import LoopRequest, Method, StepContext, adapted_layers, register, wrap_target_modules
from rosa.methods.rosa_robust.config import RosaRobustConfig, SpAConfig, density_for_budget, trainable_count
from rosa.methods.rosa_robust.layer import CSR_FIELDS, RobustLayer
from rosa.methods.rosa_robust.masks import (
    GRADIENT_CRITERIA,
    MASKS_FILE,
    GradientCollector,
    gib,
    load_masks,
    masks_from_scores,
    random_masks,
    read_mask_file,
    save_masks,
    weight_masks,
)

log = logging.getLogger(__name__)

ACCUMULATOR = "mask_accumulator"  # state_dict prefix of the collection's running sums


class Phase(str, enum.Enum):
    WARMUP = "warmup"
    COLLECT = "collect"
    SPARSE = "sparse"
    LORA = "lora"


TRANSITIONS = {Phase.WARMUP: {Phase.COLLECT}, Phase.COLLECT: {Phase.SPARSE}, Phase.SPARSE: set(), Phase.LORA: set()}


# ----------------------------------------------------------------------------- the method
@register("rosa-robust", RosaRobustConfig)
class RosaRobust(Method):
    def __init__(self, cfg: Any, seed: int = 0):
        super().__init__(cfg, seed)
        self.phase = Phase.WARMUP
        self.density = cfg.density
        self.collector: GradientCollector | None = None
        self.collect_start: int | None = None  # step at which the current collection began
        self.masks: dict = {}  # where the masks came from (for the log and adapter.json)
        self.masks_saved = False
        self.masks_checked = False  # the masks file checked against the masks (after a resume)
        self.warned_short = False
        self.resumed_sums: dict[str, torch.Tensor] = {}

    def _enter(self, phase: Phase) -> None:
        if phase not in TRANSITIONS[self.phase]:
            raise RuntimeError(f"{self.name}: no transition from phase {self.phase.value} to {phase.value}")
        self.phase = phase

    # -- building
    def prepare(self, model: nn.Module) -> nn.Module:
        cfg = self.cfg
        self.target_names = wrap_target_modules(
            model,
            cfg.target_modules,
            lambda base, _: RobustLayer(
                base, int(cfg.rank), float(cfg.alpha), float(cfg.dropout), bool(cfg.rslora), self.generator, cfg.impl
            ),
        )
        layers = self.layers(model)
        resolve_impl(cfg.impl, next(iter(layers.values())).base.weight.device)
        shapes = [(l.out_features, l.in_features) for l in layers.values()]
        if cfg.budget is not None:
            self.density = density_for_budget(shapes, float(cfg.budget), int(cfg.rank))
        if self.density is not None:  # None: from the mask file (logged when it is loaded)
            self.log_plan(shapes)

        if self.density == 0:
            self.phase = Phase.LORA
            log.info("%s: density 0, so this run is plain LoRA (rank %d): no mask, no warm-up", self.name, cfg.rank)
        elif cfg.mask_path:
            # the density check ran before the build (check_layers); here the file's density is taken
            masks, meta = read_mask_file(
                cfg.mask_path, {n: (l.out_features, l.in_features) for n, l in layers.items()}, None
            )
            self.install(model, masks)
            nnz = sum(c.nnz for c in masks.values())
            self.density = nnz / sum(n * m for n, m in shapes)  # the file's, reported everywhere
            self.masks = {**meta, "source": str(cfg.mask_path), "density": self.density}
            self.phase = Phase.SPARSE
            log.info(
                "%s: masks loaded from %s: %d nonzeros (density %.4g%%, the file's), no warm-up or collection",
                self.name,
                cfg.mask_path,
                nnz,
                100 * self.density,
            )
        elif cfg.mask_criterion not in GRADIENT_CRITERIA:
            build = (
                weight_masks(layers, self.density)
                if cfg.mask_criterion == "weight"
                else random_masks(layers, self.density, self.seed)
            )
            self.install(model, build)
            self.masks = {"source": cfg.mask_criterion, "density": self.density}
            self.phase = Phase.SPARSE
        else:
            self.phase = Phase.COLLECT if cfg.rank == 0 or cfg.warmup_steps == 0 else Phase.WARMUP
        return model

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        """Also ``fnmodel.mask_path``: readable, fitting the target layers, and of the configured
        density unless a budget or ``density: null`` leaves it to the file (``read_mask_file``)."""
        super().check_layers(shapes)
        cfg = self.cfg
        if cfg.mask_path and cfg.density != 0:
            read_mask_file(cfg.mask_path, shapes, cfg.density if cfg.budget is None else None)

    def check_device(self, device: torch.device) -> None:
        try:
            resolve_impl(self.cfg.impl, device)
        except ValueError as err:
            raise ValueError(f"fnmodel.impl={self.cfg.impl!r} is not usable on device={device}: {err}") from None

    def log_plan(self, shapes: list[tuple[int, int]]) -> None:
        cfg, d = self.cfg, self.density
        lora = trainable_count(shapes, int(cfg.rank), 0.0)
        sparse = trainable_count(shapes, 0, d)
        per_rank = sum(n + m for n, m in shapes)
        log.info(
            "%s: %d layers, rank %d, density %.4g%% (%s): LoRA %d + sparse %d = %d trainable parameters "
            "once masks exist (= LoRA rank %.2f); lrs: lora %s, sparse %s",
            self.name,
            len(shapes),
            cfg.rank,
            100 * d,
            f"from budget {cfg.budget}" if cfg.budget is not None else "set",
            lora,
            sparse,
            lora + sparse,
            (lora + sparse) / per_rank,
            cfg.lora_lr,
            cfg.sparse_lr,
        )

    @staticmethod
    def layers(model: nn.Module) -> dict[str, RobustLayer]:
        return {n: m for n, m in adapted_layers(model).items() if isinstance(m, RobustLayer)}

    def install(self, model: nn.Module, masks: dict[str, CSRMatrix]) -> None:
        layers = self.layers(model)
        if set(masks) != set(layers):
            missing, extra = sorted(set(layers) - set(masks)), sorted(set(masks) - set(layers))
            raise ValueError(f"masks do not fit the adapted layers: missing {missing[:3]}, unexpected {extra[:3]}")
        for name, layer in layers.items():
            layer.set_sparse(masks[name])

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict]:
        lora, sparse = [], []
        for layer in self.layers(model).values():
            if layer.rank:
                lora += [layer.lora_A, layer.lora_B]
            sparse.append(layer.sparse_values)
        lr = float(train_cfg.lr)
        return [
            {"name": "lora", "params": lora, "lr": float(self.cfg.lora_lr or lr)},
            {"name": "sparse", "params": sparse, "lr": float(self.cfg.sparse_lr or lr)},
        ]

    # -- the schedule
    def warmup_length(self, ctx: StepContext) -> int:
        """``warmup_steps`` (the paper's 64), shortened to a quarter of the run when the run is too
        short for warm-up + collection, so that the masks are always built (logged once)."""
        collect_steps = -(-(self.cfg.mask_samples or ctx.micro_batches_per_step) // ctx.micro_batches_per_step)
        warmup = self.cfg.warmup_steps
        if warmup + collect_steps > ctx.total_steps:
            warmup = min(warmup, max(ctx.total_steps - collect_steps, 0) // 4)
            if not self.warned_short:
                if ctx.total_steps < collect_steps:
                    log.warning(
                        "%s: the run has %d steps, fewer than the collection (%d): no mask will be built",
                        self.name,
                        ctx.total_steps,
                        collect_steps,
                    )
                else:
                    log.warning(
                        "%s: fnmodel.warmup_steps=%d does not fit a %d-step run before the collection; "
                        "warming up for %d steps instead (a quarter of the run)",
                        self.name,
                        self.cfg.warmup_steps,
                        ctx.total_steps,
                        warmup,
                    )
        self.warned_short = True
        return warmup

    def before_step(self, ctx: StepContext) -> LoopRequest | None:
        if self.phase == Phase.WARMUP and ctx.phase_step >= self.warmup_length(ctx):
            self._enter(Phase.COLLECT)
        if self.phase == Phase.COLLECT:
            if self.collector is None:
                self.start_collection(ctx)
            self.collector.begin_step()
        if self.phase == Phase.SPARSE and not self.masks_saved:
            self.save_masks(ctx, {n: l.csr for n, l in self.layers(ctx.model).items()})
        elif self.phase == Phase.SPARSE and not self.masks_checked:
            self.check_saved_masks(ctx)
        return None

    def check_saved_masks(self, ctx: StepContext) -> None:
        """Once per process after a resume: the run's masks file must hold the masks the checkpoint
        holds; an unreadable (truncated) or different file is named and written again from them."""
        self.masks_checked = True
        if ctx.run_dir is None or not distributed.is_main():
            return
        path = Path(ctx.run_dir) / MASKS_FILE
        current = {n: l.csr for n, l in self.layers(ctx.model).items()}
        try:
            saved, _ = load_masks(path)
            problem = (
                None
                if set(saved) == set(current)
                and all(
                    torch.equal(saved[n].row_offsets.cpu().long(), c.row_offsets.cpu().long())
                    and torch.equal(saved[n].col_indices.cpu().long(), c.col_indices.cpu().long())
                    for n, c in current.items()
                )
                else "it does not hold the checkpoint's masks"
            )
        except Exception as err:  # safetensors, JSON and missing-key errors alike
            problem = f"{type(err).__name__}: {err}".splitlines()[0]
        if problem is not None:
            log.warning(
                "warning: %s is unreadable or wrong (%s); writing it again from the checkpoint's masks", path, problem
            )
            self.save_masks(ctx, current)

    def start_collection(self, ctx: StepContext) -> None:
        cfg = self.cfg
        samples = cfg.mask_samples or ctx.micro_batches_per_step
        device = "cpu" if cfg.mask_accumulator_device == "cpu" else None
        self.collector = GradientCollector(self.layers(ctx.model), cfg.mask_criterion, samples, device).attach()
        if self.resumed_sums:  # a checkpoint taken inside a multi-step collection
            self.collector.load_state(self.resumed_sums)
            self.resumed_sums = {}
            log.info(
                "%s: mask collection resumed with %d micro-batches already accumulated",
                self.name,
                self.collector.collected,
            )
        else:
            self.collect_start = ctx.step
        log.info(
            "%s: collecting %s gradients over %d micro-batches from step %d; accumulators %s fp32 on %s",
            self.name,
            cfg.mask_criterion,
            samples,
            ctx.step + 1,
            gib(self.collector.accumulator_bytes()),
            device or "the model's device",
        )

    def after_step(self, ctx: StepContext) -> LoopRequest | None:
        if self.phase != Phase.COLLECT or self.collector is None:
            return None
        self.collector.end_step()
        if not self.collector.done:
            return None
        collector, self.collector = self.collector, None
        scores = collector.scores()
        collector.detach()
        masks = masks_from_scores(scores, self.density)
        requested, used = self.cfg.mask_samples or ctx.micro_batches_per_step, collector.collected
        if used < requested:
            log.warning(
                "%s: %d of the %d micro-batch statistics were non-finite (fp16 overflow?) and left out; "
                "the masks come from %d micro-batches",
                self.name,
                requested - used,
                requested,
                used,
            )
        del scores, collector
        self.install(ctx.model, masks)
        self.masks = {
            "source": self.cfg.mask_criterion,
            "density": self.density,
            "step": ctx.step,
            "micro_batches": used,
            "micro_batches_requested": requested,
        }
        self.save_masks(ctx, masks)
        self._enter(Phase.SPARSE)
        nnz = sum(c.nnz for c in masks.values())
        log.info(
            "%s: masks built at step %d (%d nonzeros); trainable parameters now %d",
            self.name,
            ctx.step,
            nnz,
            self.trainable_parameters(ctx.model),
        )
        if not self.cfg.restart:
            return LoopRequest(rebuild_optimizer=True)
        generator = torch.Generator().manual_seed(self.seed)  # the very generator state of prepare()
        for layer in self.layers(ctx.model).values():
            layer.reset_parameters(generator)
        log.info("%s: restart from the pretrained weights with the same initial LoRA and the fixed masks", self.name)
        return LoopRequest(restart=True)

    def save_masks(self, ctx: StepContext, masks: dict[str, CSRMatrix]) -> None:
        self.masks_saved = self.masks_checked = True
        if ctx.run_dir is None or not distributed.is_main():
            return
        path = save_masks(Path(ctx.run_dir) / MASKS_FILE, masks, self.masks)
        self.masks["file"] = str(path)
        log.info("%s: masks saved to %s (rerun with fnmodel.mask_path=%s to reuse them)", self.name, path, path)

    def describe(self) -> str:
        cfg = self.cfg
        head = f"{self.name} r={cfg.rank} d={100 * (self.density or 0):.3g}%"
        if self.phase == Phase.WARMUP:
            return f"{head} [LoRA warm-up: mask after {cfg.warmup_steps} steps]"
        if self.phase == Phase.COLLECT:
            done = self.collector.collected if self.collector else 0
            return f"{head} [collecting {cfg.mask_criterion} gradients: {done} micro-batches so far]"
        if self.phase == Phase.LORA:
            return f"{head} [LoRA only: density 0]"
        used = self.masks.get("micro_batches")
        over = f" over {used} micro-batches" if used is not None else ""
        return f"{head} [{'LoRA + ' if cfg.rank else ''}sparse, masks from {self.masks.get('source', '?')}{over}]"

    # -- state
    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The adapter tensors, plus the gradient accumulators while a collection is in progress (only
        a checkpoint inside a multi-step collection holds them), so that a resume there is exact."""
        state = super().state_dict(model)
        if self.collector is not None:
            state.update({f"{ACCUMULATOR}.{k}": v for k, v in self.collector.state().items()})
        return state

    def extra_state(self) -> dict:
        return {
            "phase": self.phase.value,
            "density": self.density,
            "collect_start": self.collect_start,
            "masks": self.masks,
            "masks_saved": self.masks_saved,
        }

    def load_extra_state(self, state: dict) -> None:
        if not state:
            return
        self.phase = Phase(state["phase"])
        self.density = state.get("density", self.density)
        self.collect_start = state.get("collect_start")
        self.masks = state.get("masks") or {}
        self.masks_saved = state.get("masks_saved", False)

    def load_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Accepts a state from any phase: S's structure is taken from the state's ``sparse_*``
        buffers (a new values parameter when it differs), then every tensor is copied."""
        prefix = ACCUMULATOR + "."
        self.resumed_sums = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        for name, layer in self.layers(model).items():
            buffers = {f: state[f"{name}.sparse_{f}"] for f in CSR_FIELDS if f"{name}.sparse_{f}" in state}
            if "row_offsets" not in buffers:
                continue
            same = (
                buffers["row_offsets"].numel() == layer.sparse_row_offsets.numel()
                and buffers["col_indices"].numel() == layer.nnz
                and torch.equal(buffers["row_offsets"].cpu(), layer.sparse_row_offsets.cpu())
                and torch.equal(buffers["col_indices"].cpu().long(), layer.sparse_col_indices.cpu().long())
            )
            if not same:
                layer.set_sparse(CSRMatrix.from_buffers(buffers, (layer.out_features, layer.in_features)))
        super().load_state_dict(model, state)


@register("spa", SpAConfig)
class SpA(RosaRobust):
    """Sparse adaptation only: rosa-robust with rank 0 (mask from gradients at step 0, then restart)."""


__all__ = ["RobustLayer", "RosaRobust", "RosaRobustConfig", "SpA", "SpAConfig", "density_for_budget", "trainable_count"]
