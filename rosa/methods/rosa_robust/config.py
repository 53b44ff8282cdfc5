"""rosa-robust's and spa's keys (defaults and meaning: ``conf/fnmodel/rosa-robust.yaml``, ``spa.yaml``)
and the budget arithmetic. Validation here reads nothing but the values: the masks file and the
kernels' device are checked as the run is built, before its folder exists (``RosaRobust.check_layers`` /
``check_device``, from ``Method.check_fits``), on the machine that trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from rosa.methods.base import MethodConfig
from rosa.methods.rosa_robust.masks import GRADIENT_CRITERIA, nnz_for
from rosa.schema import TARGET_MODULES, ConfigError, at_least_1, check, one_of, positive, probability, unit_interval

non_negative_int = check(lambda v: v >= 0, "an integer >= 0")


@dataclass(kw_only=True)
class RosaRobustConfig(MethodConfig):
    """Keys of ``conf/fnmodel/rosa-robust.yaml`` (their defaults and meaning are there)."""

    name: str
    rank: int = field(metadata=non_negative_int)  # 0: SpA (sparse only)
    alpha: float = field(metadata=positive)
    dropout: float = field(metadata=probability)
    rslora: bool
    density: Optional[float] = field(metadata=unit_interval)
    budget: Optional[float] = field(metadata=positive)
    target_modules: Any = field(metadata=TARGET_MODULES)
    lora_lr: Optional[float] = field(metadata=positive)
    sparse_lr: Optional[float] = field(metadata=positive)
    mask_criterion: str = field(metadata=one_of("grad-fisher", "grad-mean", "weight", "random"))
    mask_samples: Optional[int] = field(metadata=at_least_1)
    mask_accumulator_device: str = field(metadata=one_of("cpu", "model"))
    warmup_steps: int = field(metadata=non_negative_int)
    restart: bool
    mask_path: Optional[str]
    impl: str = field(metadata=one_of("auto", "triton", "torch", "dense"))

    def run_name_parts(self, lr: float) -> list[str]:
        """Rank, density, budget, then both learning rates (null: ``train.lr``), or the sparse one at rank 0."""
        lora_lr, sparse_lr = (lr if value is None else value for value in (self.lora_lr, self.sparse_lr))
        return super().run_name_parts(lr)[:-1] + [f"lr{lora_lr:g}-{sparse_lr:g}" if self.rank else f"lr{sparse_lr:g}"]

    def check_run(self, run) -> None:
        if self.budget is not None and self.density is not None:
            raise ConfigError(
                f"fnmodel.density={self.density!r} conflicts with fnmodel.budget={self.budget!r}; "
                "allowed: density=null when budget is set (it is derived from budget and rank)"
            )
        if self.budget is None and self.density is None and self.mask_path is None:
            raise ConfigError(
                "fnmodel.density=None is not allowed without fnmodel.budget or fnmodel.mask_path; "
                "set a density in [0, 1] or a budget"
            )
        if self.budget is not None and self.budget < self.rank:
            raise ConfigError(
                f"fnmodel.budget={self.budget!r} is below fnmodel.rank={self.rank}; "
                "allowed: budget >= rank (both in LoRA-rank units)"
            )
        if self.rank == 0 and (self.density == 0 or self.budget == 0):
            raise ConfigError(
                f"fnmodel.density={self.density!r} with fnmodel.rank=0 trains nothing; "
                "allowed: density > 0 when rank is 0"
            )
        chooses_masks = self.density != 0 and self.mask_path is None and self.mask_criterion in GRADIENT_CRITERIA
        if run.train.early_stop is not None and chooses_masks:  # the loop cannot tell a warm-up from the end
            raise ConfigError(
                f"train.early_stop is not allowed with fnmodel.mask_criterion={self.mask_criterion}: its patience "
                "would count the validations before the masks are chosen and could end the run there; allowed: "
                "train.early_stop=null, or masks fixed from the start (fnmodel.mask_path, or mask_criterion "
                "weight or random)"
            )


@dataclass(kw_only=True)
class SpAConfig(RosaRobustConfig):
    """SpA: rosa-robust with rank 0. ``conf/fnmodel/spa.yaml`` has no LoRA keys; these fixed values
    fill them (nothing reads them at rank 0; they are part of spa runs' identity, so they never change)."""

    alpha: float = 16.0
    dropout: float = 0.05
    rslora: bool = False
    lora_lr: Optional[float] = 7e-4
    warmup_steps: int = 64

    def check_run(self, run) -> None:
        if self.rank != 0:
            raise ConfigError(
                f"fnmodel.rank={self.rank} is not allowed for spa; allowed: 0 "
                "(spa is sparse only; use fnmodel=rosa-robust for LoRA + sparse)"
            )
        super().check_run(run)


# ----------------------------------------------------------------------------- budget
def trainable_count(shapes: list[tuple[int, int]], rank: int, density: float) -> int:
    """Exact trainable parameters of rank-r LoRA plus density-d S over matrices of these shapes."""
    return sum(rank * (n + m) + nnz_for(density, n, m) for n, m in shapes)


def density_for_budget(shapes: list[tuple[int, int]], budget: float, rank: int) -> float:
    """The density with rank*sum(n+m) + density*sum(n*m) = budget*sum(n+m)."""
    return (budget - rank) * sum(n + m for n, m in shapes) / sum(n * m for n, m in shapes)
