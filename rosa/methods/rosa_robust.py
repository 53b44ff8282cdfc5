"""RoSA, robust adaptation: LoRA plus a sparse adapter (Nikdan, Tabesh, Crnčević, Alistarh, "RoSA:
Accurate Parameter-Efficient Fine-Tuning via Robust Adaptation", ICML 2024, arXiv 2401.04679).
``fnmodel=rosa-robust``; ``fnmodel=spa`` is the same method with rank 0 (the paper's sparse-only
baseline SpA). Not to be confused with ROSA (random orthogonal subspaces, ``rosa-orthogonal``).

Layer
-----
For a frozen linear layer W0 (n x m = out x in)::

    y = W0 x + s * B A dropout(x) + S x (+ bias),      s = alpha / r   (rsLoRA: alpha / sqrt(r))

A (r x m) kaiming-uniform and B (n x r) = 0 exactly as ``lora``; S (n x m) has a fixed sparse mask of
nnz = int(density * n * m) entries and starts at 0; only its values train (``sparse_values``, a 1-D
parameter). Dropout acts on the LoRA input only. S's structure is CSR from ``rosa.kernels``
(int32 row offsets, int16/int32 column indices, rows ordered by nonzero count, plus the transposed
structure), registered as buffers ``sparse_*`` so it is saved with the adapter. Before the mask
exists, S is empty (nnz = 0). Merging adds s * B A + dense(S) to W0.

``impl`` picks the kernels: ``torch`` / ``triton`` compute W0 x + SpMM(S, x) (SDDMM for dS);
``dense`` materialises W0 + S and does one matmul (RoSA's default ``sp_add``); ``auto`` is triton on
CUDA, dense on CPU (``layer_impl``: profiled in docs/profiling.md, MKL's CSR SpMM plus adding its
transposed output cost ~0.5x a LoRA layer's time, materialising W0 + S ~0.002x).

Masks (``rosa/methods/sparse_masks.py``)
-----
Per matrix, the top-k of a score. ``mask_criterion=grad-fisher`` (the paper's): the mean over
``mask_samples`` micro-batches (default: one optimizer step's worth, 32 in the paper) of the square
of each micro-batch's dense weight gradient G^T X, from hooks on the layer's input X and output
gradient G (no ``weight.grad`` needed, so frozen and 4-bit bases work). ``grad-mean``: |mean G^T X|.
``weight`` (|W0|) and ``random`` need no gradients: their masks are built at once, with no warm-up.

Schedule (one command)
--------
1. ``warmup``: ``warmup_steps`` (64) optimizer steps of LoRA alone, under the run's LR schedule.
   Skipped for rank 0 (nothing would train) and when ``mask_path`` gives the masks.
2. ``collect``: the next steps (one by default) also accumulate gradient statistics; at the end of
   the step that completes ``mask_samples`` micro-batches the masks are built and written to
   ``<run>/masks.safetensors``.
3. ``sparse``: by default (``restart=true``) the paper's restart: back to the pretrained function
   (LoRA re-initialised from a fresh generator with the run's seed, i.e. the very same initial A;
   S = 0) and the loop restarts the optimizer, LR schedule and data order (``LoopRequest(restart)``),
   so LoRA + S then train for the run's full length; the warm-up only chose the mask. With
   ``restart=false`` training continues and S's values join the optimizer.
``mask_path`` (a masks file or a run folder) loads saved masks and starts in ``sparse``. With
density 0 the method is LoRA (phase ``lora``). The phase is in ``extra_state()``, so a run killed in
any phase resumes in it exactly: a checkpoint inside a multi-step collection also holds the running
sums (``state_dict``); with the default one-step collection no checkpoint falls inside one.
Data parallel: the statistics are summed over ranks (``GradientCollector``), so every rank builds
the masks one process would; only rank 0 writes the masks file.

Budget
------
``budget: B`` counts trainable parameters in units of "LoRA rank" over the adapted modules: with
``rank: r`` set and ``density: null``, the density is derived so that

    r * sum(n + m) + density * sum(n * m) = B * sum(n + m)

i.e. ``rosa-robust`` matches LoRA of rank B (nnz is then floored per matrix, so it is a few
parameters under). The paper's budgets r/16 + d/0.6% = 1, 2, 4 are ``budget: 16, 32, 64`` (they
counted embeddings and head too; see tests/methods/test_param_counts.py).

Optimizer: two groups, LoRA factors at ``lora_lr`` (7e-4) and sparse values at ``sparse_lr``
(2e-4), as the paper's scripts; null means ``train.lr``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import torch
from torch import nn

from rosa.kernels import CSRMatrix, dense_plus_sparse_linear, resolve_impl, sparse_linear
from rosa.methods.base import (AdaptedLayer, LoopRequest, Method, StepContext, adapted_layers, base_weight_for_matmul,
                               register, wrap_target_modules)
from rosa.methods.lora import LoRALayer
from rosa.methods.sparse_masks import (GRADIENT_CRITERIA, MASKS_FILE, GradientCollector, file_density, gib,
                                       load_masks, mask_file_layers, masks_from_scores, nnz_for, random_masks,
                                       save_masks, weight_masks)
from rosa.schema import TARGET_MODULES, ConfigError, at_least_1, check, positive, probability, unit_interval
from rosa import distributed

log = logging.getLogger(__name__)

ACCUMULATOR = "mask_accumulator"   # state_dict prefix of the collection's running sums
non_negative_int = check(lambda v: v >= 0, "an integer >= 0")


# ----------------------------------------------------------------------------- config
@dataclass(kw_only=True)
class RosaRobustConfig:
    """Keys of ``conf/fnmodel/rosa-robust.yaml`` (their defaults and meaning are there)."""
    name: str
    rank: int = field(metadata=non_negative_int)         # 0: SpA (sparse only)
    alpha: float = field(metadata=positive)
    dropout: float = field(metadata=probability)
    rslora: bool
    density: Optional[float] = field(metadata=unit_interval)
    budget: Optional[float] = field(metadata=positive)
    target_modules: Any = field(metadata=TARGET_MODULES)
    lora_lr: Optional[float] = field(metadata=positive)
    sparse_lr: Optional[float] = field(metadata=positive)
    mask_criterion: Literal["grad-fisher", "grad-mean", "weight", "random"]
    mask_samples: Optional[int] = field(metadata=at_least_1)
    mask_accumulator_device: Literal["cpu", "model"]
    warmup_steps: int = field(metadata=non_negative_int)
    restart: bool
    mask_path: Optional[str]
    impl: Literal["auto", "triton", "torch", "dense"]
    IDENTITY_V1: ClassVar = {"name", "rank", "alpha", "dropout", "rslora", "density", "budget", "target_modules",
                             "lora_lr", "sparse_lr", "mask_criterion", "mask_samples", "mask_accumulator_device",
                             "warmup_steps", "restart", "mask_path", "impl"}

    def validate(self, run) -> None:
        if self.budget is not None and self.density is not None:
            raise ConfigError(f"fnmodel.density={self.density!r} conflicts with fnmodel.budget={self.budget!r}; "
                              "allowed: density=null when budget is set (it is derived from budget and rank)")
        if self.budget is None and self.density is None and self.mask_path is None:
            raise ConfigError("fnmodel.density=None is not allowed without fnmodel.budget or fnmodel.mask_path; "
                              "set a density in [0, 1] or a budget")
        if self.budget is not None and self.budget < self.rank:
            raise ConfigError(f"fnmodel.budget={self.budget!r} is below fnmodel.rank={self.rank}; "
                              "allowed: budget >= rank (both in LoRA-rank units)")
        if self.rank == 0 and (self.density == 0 or self.budget == 0):
            raise ConfigError(f"fnmodel.density={self.density!r} with fnmodel.rank=0 trains nothing; "
                              "allowed: density > 0 when rank is 0")
        if self.mask_path is not None and not Path(self.mask_path).exists():
            raise ConfigError(f"fnmodel.mask_path={self.mask_path!r} does not exist; allowed: a "
                              f"{MASKS_FILE} file or a run folder holding one")
        if self.mask_path is not None:
            self.check_mask_file()
        device = run.device if run.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            resolve_impl(self.impl, device)
        except ValueError as err:
            raise ConfigError(f"fnmodel.impl={self.impl!r} is not usable on device={run.device}: {err}") from None


    def check_mask_file(self) -> None:
        """The masks file must be readable, and of the configured density unless the density is left
        to the file (``fnmodel.density=null``)."""
        try:
            layers = mask_file_layers(self.mask_path)
        except ValueError as err:
            raise ConfigError(f"fnmodel.mask_path={self.mask_path!r}: {err}; allowed: a {MASKS_FILE} written by a "
                              "rosa-robust or spa run (or its run folder)") from None
        if self.density is None or self.budget is not None:
            return
        if any(nnz != nnz_for(self.density, n, m) for nnz, n, m in layers.values()):
            nnz = sum(v[0] for v in layers.values())
            raise ConfigError(f"fnmodel.mask_path={self.mask_path!r} has density {file_density(layers):.4g} ({nnz} "
                              f"nonzeros), not fnmodel.density={self.density!r}; allowed: a masks file of that "
                              "density, or fnmodel.density=null to take the density from the file")


@dataclass(kw_only=True)
class SpAConfig(RosaRobustConfig):
    """SpA: rosa-robust with rank 0. ``conf/fnmodel/spa.yaml`` has no LoRA keys; these fixed values
    fill them (nothing reads them at rank 0; they are part of spa runs' identity, so they never change)."""
    alpha: float = 16.0
    dropout: float = 0.05
    rslora: bool = False
    lora_lr: Optional[float] = 7e-4
    warmup_steps: int = 64

    def validate(self, run) -> None:
        if self.rank != 0:
            raise ConfigError(f"fnmodel.rank={self.rank} is not allowed for spa; allowed: 0 "
                              "(spa is sparse only; use fnmodel=rosa-robust for LoRA + sparse)")
        super().validate(run)


# ----------------------------------------------------------------------------- budget
def trainable_count(shapes: list[tuple[int, int]], rank: int, density: float) -> int:
    """Exact trainable parameters of rank-r LoRA plus density-d S over matrices of these shapes."""
    return sum(rank * (n + m) + nnz_for(density, n, m) for n, m in shapes)


def density_for_budget(shapes: list[tuple[int, int]], budget: float, rank: int) -> float:
    """The density with rank*sum(n+m) + density*sum(n*m) = budget*sum(n+m)."""
    return (budget - rank) * sum(n + m for n, m in shapes) / sum(n * m for n, m in shapes)


# ----------------------------------------------------------------------------- the layer
CSR_FIELDS = ("row_offsets", "col_indices", "row_order", "t_row_offsets", "t_col_indices", "t_row_order", "t_perm")


def layer_impl(impl: str, device) -> str:
    """The layer's path: as ``resolve_impl``, except that ``auto`` on CPU is ``dense``. With a dense W0
    at hand, x (W0 + S)^T costs one O(n m) copy more than the base matmul, while MKL's CSR SpMM
    (x @ S^T, output transposed) and the extra add cost ~half a LoRA layer's step (docs/profiling.md)."""
    if impl == "auto" and torch.device(device).type == "cpu":
        return "dense"
    return resolve_impl(impl, device)


def empty_csr(n: int, m: int) -> CSRMatrix:
    return CSRMatrix.from_buffers({"row_offsets": torch.zeros(n + 1, dtype=torch.int32, device="cpu"),
                                   "col_indices": torch.zeros(0, dtype=torch.int32, device="cpu")}, (n, m))


class RobustLayer(LoRALayer):
    """W0 x + s B A dropout(x) + S x. With rank 0 there is no LoRA branch (SpA)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float, rslora: bool,
                 generator: torch.Generator, impl: str = "auto"):
        if rank > 0:
            super().__init__(base, rank, alpha, dropout, rslora, generator)
        else:
            AdaptedLayer.__init__(self, base)
            self.rank, self.scale = 0, 0.0
        self.impl = impl
        self._csr: CSRMatrix | None = None
        self.set_sparse(empty_csr(self.out_features, self.in_features))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """LoRA's init (drawn on the CPU in fp32, so a restart on GPU or in bf16 re-creates exactly
        the initial A); nothing to draw without a LoRA branch."""
        if self.rank:
            super().reset_parameters(generator)

    # -- the sparse part
    def set_sparse(self, csr: CSRMatrix) -> None:
        """Give S this structure (buffers ``sparse_*``) and fresh zero values (a new parameter)."""
        if csr.shape != (self.out_features, self.in_features):
            raise ValueError(f"mask of shape {csr.shape} for a layer of shape {(self.out_features, self.in_features)}")
        device = self.base.weight.device
        csr = csr.to(device)
        for name in CSR_FIELDS:
            self.register_buffer(f"sparse_{name}", getattr(csr, name))
        dtype = self.lora_A.dtype if self.rank else torch.float32
        self.sparse_values = nn.Parameter(torch.zeros(csr.nnz, dtype=dtype, device=device))
        self._csr = csr

    @property
    def csr(self) -> CSRMatrix:
        """The structure over the current buffers (rebuilt when ``.to()`` replaced them)."""
        if self._csr is None or self._csr.row_offsets is not self.sparse_row_offsets:
            self._csr = CSRMatrix((self.out_features, self.in_features),
                                  **{name: getattr(self, f"sparse_{name}") for name in CSR_FIELDS})
        return self._csr

    @property
    def nnz(self) -> int:
        return self.sparse_values.numel()

    # -- compute
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nnz == 0:
            y = self.base(x)
        elif layer_impl(self.impl, x.device) == "dense":
            y = dense_plus_sparse_linear(x, base_weight_for_matmul(self.base), self.sparse_values, self.csr)
            if self.base.bias is not None:
                y = y + self.base.bias.to(y.dtype)
        else:
            y = self.base(x)
            with torch.autocast(x.device.type, enabled=False):  # the SpMM accumulates in fp32 anyway; CPU
                s = sparse_linear(x, self.sparse_values, self.csr, self.impl)  # sparse MKL has no bf16
            y = y + s.to(y.dtype)
        if self.rank:
            y = y + self.lora_forward(x)
        return y

    def delta_weight(self) -> torch.Tensor:
        if self.rank:
            delta = super().delta_weight()
        else:
            delta = torch.zeros(self.out_features, self.in_features, device=self.sparse_values.device)
        if self.nnz:
            delta = delta + self.csr.to_dense(self.sparse_values.detach().float())
        return delta


# ----------------------------------------------------------------------------- the method
@register("rosa-robust", RosaRobustConfig)
class RosaRobust(Method):

    def __init__(self, cfg: Any, seed: int = 0):
        super().__init__(cfg, seed)
        self.phase = "warmup"              # warmup | collect | sparse | lora
        self.density = cfg.density
        self.collector: GradientCollector | None = None
        self.collect_start: int | None = None   # step at which the current collection began
        self.masks: dict = {}              # where the masks came from (for the log and adapter.json)
        self.masks_saved = False
        self.masks_checked = False         # the masks file checked against the masks (after a resume)
        self.warned_short = False
        self.resumed_sums: dict[str, torch.Tensor] = {}

    # -- building
    def prepare(self, model: nn.Module) -> nn.Module:
        cfg = self.cfg
        self.target_names = wrap_target_modules(model, cfg.target_modules, lambda base, _: RobustLayer(
            base, int(cfg.rank), float(cfg.alpha), float(cfg.dropout), bool(cfg.rslora), self.generator, cfg.impl))
        layers = self.layers(model)
        resolve_impl(cfg.impl, next(iter(layers.values())).base.weight.device)
        shapes = [(l.out_features, l.in_features) for l in layers.values()]
        if cfg.budget is not None:
            self.density = density_for_budget(shapes, float(cfg.budget), int(cfg.rank))
        if self.density is not None:   # None: from the mask file (logged when it is loaded)
            self.log_plan(shapes)

        if self.density == 0:
            self.phase = "lora"
            log.info("%s: density 0, so this run is plain LoRA (rank %d): no mask, no warm-up", self.name, cfg.rank)
        elif cfg.mask_path:
            masks, meta = load_masks(cfg.mask_path)
            self.install(model, masks)
            nnz = sum(c.nnz for c in masks.values())
            self.density = nnz / sum(n * m for n, m in shapes)   # the file's, reported everywhere
            self.masks = {**meta, "source": str(cfg.mask_path), "density": self.density}
            self.phase = "sparse"
            log.info("%s: masks loaded from %s: %d nonzeros (density %.4g%%, the file's), "
                     "no warm-up or collection", self.name, cfg.mask_path, nnz, 100 * self.density)
        elif cfg.mask_criterion not in GRADIENT_CRITERIA:
            build = weight_masks(layers, self.density) if cfg.mask_criterion == "weight" else \
                random_masks(layers, self.density, self.seed)
            self.install(model, build)
            self.masks = {"source": cfg.mask_criterion, "density": self.density}
            self.phase = "sparse"
        else:
            self.phase = "collect" if cfg.rank == 0 or cfg.warmup_steps == 0 else "warmup"
        return model

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        super().check_layers(shapes)
        if not self.cfg.mask_path or self.cfg.density == 0:
            return
        try:
            masks, _ = load_masks(self.cfg.mask_path)
        except Exception as err:  # noqa: BLE001 - any unreadable file: one line naming it
            reason = (str(err).strip().splitlines() or [""])[0]
            raise ValueError(f"fnmodel.mask_path={self.cfg.mask_path!r} is not a readable {MASKS_FILE} "
                             f"({type(err).__name__}: {reason}); allowed: a masks file saved by rosa-robust "
                             "or a run folder holding one") from None
        wrong = sorted(n for n in masks if n in shapes and tuple(masks[n].shape) != tuple(shapes[n]))
        if set(masks) != set(shapes) or wrong:
            missing, extra = sorted(set(shapes) - set(masks)), sorted(set(masks) - set(shapes))
            raise ValueError(f"fnmodel.mask_path={self.cfg.mask_path!r} does not fit the target layers: missing "
                             f"{missing[:3]}, unexpected {extra[:3]}, other shape {wrong[:3]}; allowed: masks "
                             "saved for this model and fnmodel.target_modules")

    def log_plan(self, shapes: list[tuple[int, int]]) -> None:
        cfg, d = self.cfg, self.density
        lora = trainable_count(shapes, int(cfg.rank), 0.0)
        sparse = trainable_count(shapes, 0, d)
        per_rank = sum(n + m for n, m in shapes)
        log.info("%s: %d layers, rank %d, density %.4g%% (%s): LoRA %d + sparse %d = %d trainable parameters "
                 "once masks exist (= LoRA rank %.2f); lrs: lora %s, sparse %s", self.name, len(shapes), cfg.rank,
                 100 * d, f"from budget {cfg.budget}" if cfg.budget is not None else "set", lora, sparse,
                 lora + sparse, (lora + sparse) / per_rank, cfg.lora_lr, cfg.sparse_lr)

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
        return [{"name": "lora", "params": lora, "lr": float(self.cfg.lora_lr or lr)},
                {"name": "sparse", "params": sparse, "lr": float(self.cfg.sparse_lr or lr)}]

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
                    log.warning("%s: the run has %d steps, fewer than the collection (%d): no mask will be built",
                                self.name, ctx.total_steps, collect_steps)
                else:
                    log.warning("%s: fnmodel.warmup_steps=%d does not fit a %d-step run before the collection; "
                                "warming up for %d steps instead (a quarter of the run)", self.name,
                                self.cfg.warmup_steps, ctx.total_steps, warmup)
        self.warned_short = True
        return warmup

    def before_step(self, ctx: StepContext) -> LoopRequest | None:
        if self.phase == "warmup" and ctx.phase_step >= self.warmup_length(ctx):
            self.phase = "collect"
        if self.phase == "collect":
            if self.collector is None:
                self.start_collection(ctx)
            self.collector.begin_step()
        if self.phase == "sparse" and not self.masks_saved:
            self.save_masks(ctx, {n: l.csr for n, l in self.layers(ctx.model).items()})
        elif self.phase == "sparse" and not self.masks_checked:
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
            problem = None if set(saved) == set(current) and all(
                torch.equal(saved[n].row_offsets.cpu().long(), c.row_offsets.cpu().long())
                and torch.equal(saved[n].col_indices.cpu().long(), c.col_indices.cpu().long())
                for n, c in current.items()) else "it does not hold the checkpoint's masks"
        except Exception as err:  # safetensors, JSON and missing-key errors alike
            problem = f"{type(err).__name__}: {err}".splitlines()[0]
        if problem is not None:
            log.warning("warning: %s is unreadable or wrong (%s); writing it again from the checkpoint's masks",
                        path, problem)
            self.save_masks(ctx, current)

    def start_collection(self, ctx: StepContext) -> None:
        cfg = self.cfg
        samples = cfg.mask_samples or ctx.micro_batches_per_step
        device = "cpu" if cfg.mask_accumulator_device == "cpu" else None
        self.collector = GradientCollector(self.layers(ctx.model), cfg.mask_criterion, samples, device).attach()
        if self.resumed_sums:   # a checkpoint taken inside a multi-step collection
            self.collector.load_state(self.resumed_sums)
            self.resumed_sums = {}
            log.info("%s: mask collection resumed with %d micro-batches already accumulated",
                     self.name, self.collector.collected)
        else:
            self.collect_start = ctx.step
        log.info("%s: collecting %s gradients over %d micro-batches from step %d; accumulators %s fp32 on %s",
                 self.name, cfg.mask_criterion, samples, ctx.step + 1, gib(self.collector.accumulator_bytes()),
                 device or "the model's device")

    def after_step(self, ctx: StepContext) -> LoopRequest | None:
        if self.phase != "collect" or self.collector is None:
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
            log.warning("%s: %d of the %d micro-batch statistics were non-finite (fp16 overflow?) and left out; "
                        "the masks come from %d micro-batches", self.name, requested - used, requested, used)
        del scores, collector
        self.install(ctx.model, masks)
        self.masks = {"source": self.cfg.mask_criterion, "density": self.density, "step": ctx.step,
                      "micro_batches": used, "micro_batches_requested": requested}
        self.save_masks(ctx, masks)
        self.phase = "sparse"
        nnz = sum(c.nnz for c in masks.values())
        log.info("%s: masks built at step %d (%d nonzeros); trainable parameters now %d", self.name, ctx.step,
                 nnz, self.trainable_parameters(ctx.model))
        if not self.cfg.restart:
            return LoopRequest(rebuild_optimizer=True)
        generator = torch.Generator().manual_seed(self.seed)   # the very generator state of prepare()
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
        if self.phase == "warmup":
            return f"{head} [LoRA warm-up: mask after {cfg.warmup_steps} steps]"
        if self.phase == "collect":
            done = self.collector.collected if self.collector else 0
            return f"{head} [collecting {cfg.mask_criterion} gradients: {done} micro-batches so far]"
        if self.phase == "lora":
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
        return {"phase": self.phase, "density": self.density, "collect_start": self.collect_start,
                "masks": self.masks, "masks_saved": self.masks_saved}

    def load_extra_state(self, state: dict) -> None:
        if not state:
            return
        self.phase = state["phase"]
        self.density = state.get("density", self.density)
        self.collect_start = state.get("collect_start")
        self.masks = state.get("masks") or {}
        self.masks_saved = state.get("masks_saved", False)

    def load_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Accepts a state from any phase: S's structure is taken from the state's ``sparse_*``
        buffers (a new values parameter when it differs), then every tensor is copied."""
        prefix = ACCUMULATOR + "."
        self.resumed_sums = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        for name, layer in self.layers(model).items():
            buffers = {f: state[f"{name}.sparse_{f}"] for f in CSR_FIELDS if f"{name}.sparse_{f}" in state}
            if "row_offsets" not in buffers:
                continue
            same = (buffers["row_offsets"].numel() == layer.sparse_row_offsets.numel()
                    and buffers["col_indices"].numel() == layer.nnz
                    and torch.equal(buffers["row_offsets"].cpu(), layer.sparse_row_offsets.cpu())
                    and torch.equal(buffers["col_indices"].cpu().long(), layer.sparse_col_indices.cpu().long()))
            if not same:
                layer.set_sparse(CSRMatrix.from_buffers(buffers, (layer.out_features, layer.in_features)))
        super().load_state_dict(model, state)


@register("spa", SpAConfig)
class SpA(RosaRobust):
    """Sparse adaptation only: rosa-robust with rank 0 (mask from gradients at step 0, then restart)."""


__all__ = ["RobustLayer", "RosaRobust", "RosaRobustConfig", "SpA", "SpAConfig", "density_for_budget",
           "trainable_count"]
