"""ROSA: Random Orthogonal Subspace Adaptation (Hameed & Rabusseau, ICML 2023 workshop "Efficient
Systems for Foundation Models", openreview 4P9vOFpb63). Config group ``fnmodel=rosa-orthogonal``
(alias ``fnmodel.name=rosa``, the paper's own name).

The math
--------
For an adapted weight W in R^{m x n} (stored [out, in] = [m, n]; GPT-2's Conv1D is transposed on
the fly by the base helpers), take the thin SVD in float32::

    W = U S V^T,   k = min(m, n),   singular values in descending order.

Choose r of the k singular directions, an index set I (``selection``), and split them off::

    split = sqrt (the paper, Fig. 1):  A = U_I S_I^{1/2}   [m x r],   B = S_I^{1/2} V_I^T   [r x n]
    split = left (the later code):     A = U_I S_I         [m x r],   B = V_I^T             [r x n]
    W_fixed = W - A B                  (= U_{not I} S_{not I} V_{not I}^T up to float error)

so that W_fixed + A B = W at sampling time. The layer computes ``y = W_fixed x + A (B x) + b`` with
A and B trainable (and b when ``train_bias``), W_fixed a frozen buffer. Gradients therefore act
only through the r-dimensional factors: r (m + n) trainable numbers instead of m n, a reduction of
rho = m n / (r (m + n)) (the paper's eq. 2).

Resampling: every ``resample_every`` optimizer steps (or once per epoch), merge A B back into one
matrix W <- W_fixed + A B, take its SVD again and re-split. A resample does not change the
function the model computes; it only changes which subspace is trainable next. Over a run with
subspaces s = 1..T (factors A_s B_s right after sampling s, A'_s B'_s at its end)::

    W_final - W_0 = sum_s (A'_s B'_s - A_s B_s)

a sum of rank-<=2r changes, so ROSA can reach a full-rank update that LoRA (one fixed rank-r
product) cannot.

``resample_every: never`` is *not* LoRA, although the paper calls LoRA "ROSA with sampling only
conducted once". Sampled once, the trainable product A B *replaces* r singular directions of W
(W = W_fixed + A B with A B a slice of W's SVD, not a zero product added to W), so the reachable
weights are W_fixed + (any rank-r matrix): a rank-r change of W lies out of reach unless it fits
the sampled directions, while LoRA reaches it exactly. It also starts from non-zero factors, so its
gradients and optimizer steps differ from LoRA's. On every teacher-student target tried (rank-r and
full-rank changes, learning rates 1e-3 and 1e-2) it ends worse than LoRA; for LoRA use
``fnmodel=lora``.

Rank: ``rank`` is an integer r, or a ratio rho in (0, 1) of min(m, n): r = max(int(rho min(m, n)), 1),
per layer. The paper's GPT-2 runs use rho in {0.0125, 0.025, 0.05, 0.1} on the four Conv1D layers
of every block; with trained biases that gives its Table 2 counts (tests/methods check them).

Implementation choices (vs. the official code, marawangamal/rosa; see docs/rosa-orthogonal.md)
-------------------------------------------------------------------------------------------
- W_fixed = W - A B (one GEMM) rather than U_rest S_rest V_rest^T: the function is preserved
  exactly even where the SVD is slightly inexact, and it costs m r n instead of m (k - r) n.
- Storage: W_fixed is ONE dense [out, in] buffer (the base weight's dtype, or float32: bf16 drift); the base module's
  own weight is dropped (``base.weight = None``) so the matrix is held once. The base module stays
  for its bias and is handed back by ``merged_base`` with ``weight = W_fixed + A B``.
- ``random-window`` (default, as the official code): a contiguous block [s, s + r) of the sorted
  directions with s uniform in {0, ..., k - r} (the official ``randint(0, k - r)`` excluded the last
  window). ``random-subset``: r distinct directions uniformly. ``top``: the first r. ``bottom``: the
  last r (the paper-era code took r + 1 for ratio ranks; we take exactly r).
- The random choice is a function of (run seed, global step, layer index) only, so a resumed run
  draws the same subspace, whatever ran before.
- bf16 drift: each resample recomputes W_fixed = W - A B; stored in bf16, W_fixed would be rounded
  at every resample and the error would walk like a random walk (measured on a 192x256 bf16 layer:
  3.9e-3 of max|W| after 1 resample, 7.3e-2 after 200; with the master: 6e-8 and 1.3e-6). So when resampling repeats (``resample_every`` not
  ``never``) a bf16/fp16 (and 4-bit) base keeps W_fixed in float32 (a master copy; 2x the adapted
  weights' memory on a bf16 base) and the forward casts it to the compute dtype: the drift is then
  bounded by float32 rounding, at most ~2^-23 max|W| per resample (n resamples: <= n 2^-23 max|W|,
  about sqrt(n) 2^-24 typically), and the bf16 forward rounds once, never cumulatively. Sampling
  once (``never``) rounds once and keeps the base's dtype.
- Before the first sampling a freshly prepared layer holds W_fixed = W, A = B = 0 (same function,
  no SVD). ``prepare`` therefore runs no SVD: it is cheap, works on the meta device (parameter
  counts from shapes), and a resumed or evaluated run loads its split from the state dict instead.
  The loop's first ``before_step`` (phase step 0) does the first real sampling.
- Optimizer at a resample: new nn.Parameter objects, ``LoopRequest(rebuild_optimizer=True)``; the
  loop keeps every AdamW hyperparameter and the biases' moments, gives the new factors fresh
  moments, and the LR schedule continues (the official code dropped momentum/weight decay and, by a
  bug, restarted warm-up every epoch; neither is copied).
- Factorisation (``subspace_factors``), float32 on the layer's device: an eigendecomposition of the
  smaller Gram matrix (k x k, k = min(m, n)), then only the r chosen directions are formed (singular
  values as norms of w v_i, so A B = W V_I V_I^T to rounding). Measured 2.2x faster than the SVD on
  CPU for SmolLM2's 210 layers (7.8 s vs 17.7 s, one thread). It is used only when every drawn
  singular value is >= 0.03 sigma_max (below that, float32 Gram vectors lose orthogonality beyond
  1e-4); otherwise that layer takes the full SVD (``thin_svd``: a wide matrix factored as its
  transpose, MKL's faster orientation). W_fixed = W - A B either way, so the function is kept to
  rounding. Each resample's time is logged.
- 4-bit bases (precision=nf4): ``dense_weight(base)`` dequantises torchao NF4, so sampling works;
  W_fixed is then stored dense (bf16, or float32: bf16 drift) and the 4-bit weight is dropped: adapted
  layers save no memory. Re-quantising W_fixed would break W_fixed + A B = W at every resample; a
  4-bit W_fixed is the seam for later (``OrthogonalLayer.__init__`` / ``resample``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rosa import distributed
from rosa.methods.base import (
    AdaptedLayer,
    LoopRequest,
    Method,
    MethodConfig,
    StepContext,
    adapted_layers,
    dense_weight,
    is_conv1d,
    linear_shape,
    register,
    wrap_target_modules,
)
from rosa.methods.lora import _LowRankLinear
from rosa.schema import TARGET_MODULES, check, one_of

log = logging.getLogger(__name__)

SELECTIONS = ("random-window", "random-subset", "top", "bottom")


# --------------------------------------------------------------------------- config
def _rank_ok(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1
    return isinstance(value, float) and 0.0 < value < 1.0


def _period_ok(value: Any) -> bool:
    if value in ("epoch", "never"):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(kw_only=True)
class RosaOrthogonalConfig(MethodConfig):
    """Keys of ``conf/fnmodel/rosa-orthogonal.yaml`` (their defaults and meaning are there)."""

    name: str
    rank: Any = field(metadata=check(_rank_ok, "an integer >= 1, or a ratio in (0, 1) of min(out, in)"))
    selection: str = field(metadata=one_of("random-window", "random-subset", "top", "bottom"))
    split: str = field(metadata=one_of("sqrt", "left"))
    resample_every: Any = field(
        metadata=check(_period_ok, "'epoch', 'never' (sample once, at the start) or an integer >= 1 (optimizer steps)")
    )
    train_bias: bool
    target_modules: Any = field(metadata=TARGET_MODULES)


# --------------------------------------------------------------------------- the pieces, as functions
def resolve_rank(rank: int | float, out_features: int, in_features: int) -> int:
    """r for one layer: an int as is, a ratio rho in (0, 1) as max(int(rho * min(out, in)), 1)."""
    k = min(out_features, in_features)
    r = int(rank) if isinstance(rank, int) else max(int(rank * k), 1)
    if not 1 <= r <= k:
        raise ValueError(
            f"fnmodel.rank={rank!r} gives r={r} for a {out_features}x{in_features} layer; "
            f"allowed: 1 <= r <= min(out, in) = {k}"
        )
    return r


def select_indices(k: int, r: int, selection: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """r sorted indices into k singular directions (sorted by descending singular value)."""
    if selection == "top":
        return torch.arange(r)
    if selection == "bottom":
        return torch.arange(k - r, k)
    if selection == "random-window":
        start = int(torch.randint(0, k - r + 1, (1,), generator=generator))
        return torch.arange(start, start + r)
    if selection == "random-subset":
        return torch.randperm(k, generator=generator)[:r].sort().values
    raise ValueError(f"fnmodel.selection={selection!r} is unknown; choose one of: {', '.join(SELECTIONS)}")


def thin_svd(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch.linalg.svd(w, full_matrices=False), computed on the tall orientation: for a wide w
    (m < n) it factors w^T and swaps the factors (same decomposition; MKL's CPU SVD of a wide matrix
    is ~2.5x slower than of its transpose)."""
    if w.shape[0] >= w.shape[1]:
        return torch.linalg.svd(w, full_matrices=False)
    u, s, vh = torch.linalg.svd(w.t(), full_matrices=False)
    return vh.t(), s, u.t()


# Below this sigma_i / sigma_max, singular vectors recovered from the Gram matrix lose orthogonality
# (error ~ eps * sigma_max^2 / sigma_i^2 > 1e-4 in float32): such a draw takes the full SVD instead.
GRAM_MIN_RATIO = 0.03


def gram_factors(
    w: torch.Tensor, r: int, selection: str, generator: torch.Generator | None, split: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(A, B, indices) of r singular directions of w from an eigendecomposition of the smaller Gram
    matrix (G = w^T w for a tall w, w w^T for a wide one: k x k, k = min(m, n)), or None when a chosen
    direction's singular value is below GRAM_MIN_RATIO * sigma_max (then the caller uses the SVD).

    For a tall w with G's eigenvectors V (descending), the chosen columns V_I give w V_I = U_I S_I, so
    S_I = column norms of w V_I (exact to float rounding, unlike sqrt of G's eigenvalues) and
    A B = w V_I V_I^T for either split; likewise for a wide w with U_I^T w = S_I V_I^T. Same draw of
    indices as the SVD path (the same generator calls on k)."""
    tall = w.shape[0] >= w.shape[1]
    gram = w.t() @ w if tall else w @ w.t()
    eigenvalues, vectors = torch.linalg.eigh(gram)  # ascending
    eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)  # descending, as the SVD's
    idx = select_indices(eigenvalues.numel(), r, selection, generator).to(w.device)
    chosen = vectors[:, idx]
    projected = w @ chosen if tall else (chosen.t() @ w).t()  # [m, r] = U_I S_I, or [n, r] = V_I S_I
    sigma = projected.norm(dim=0)
    if float(sigma.min()) < GRAM_MIN_RATIO * float(eigenvalues[0].clamp_min(0).sqrt()):
        return None
    u, v = (projected / sigma, chosen) if tall else (chosen, projected / sigma)
    return (*split_factors(u, sigma, v.t(), split), idx)


def subspace_factors(
    w: torch.Tensor, r: int, selection: str, split: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A [m, r], B [r, n], indices): the Gram path when it is accurate for the drawn directions
    (2-3x faster than the SVD on CPU for every adapted shape we run), else the full thin SVD."""
    state = generator.get_state()
    factors = gram_factors(w, r, selection, generator, split)
    if factors is not None:
        return factors
    generator.set_state(state)  # draw the same indices again
    u, s, vh = thin_svd(w)
    idx = select_indices(s.numel(), r, selection, generator).to(w.device)
    return (*split_factors(u[:, idx], s[idx], vh[idx, :], split), idx)


def split_factors(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A [m, r], B [r, n] from r chosen singular triplets (u [m, r], s [r], vh [r, n])."""
    if split == "sqrt":
        root = s.sqrt()
        return u * root, root[:, None] * vh
    if split == "left":
        return u * s, vh.clone()
    raise ValueError(f"fnmodel.split={split!r} is unknown; choose sqrt or left")


def subspace_generator(seed: int, step: int, layer_index: int) -> torch.Generator:
    """A CPU generator that depends on (seed, step, layer index) only: resumes draw the same subspace."""
    words = np.random.SeedSequence([seed % 2**63, step, layer_index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(words[0]) << 32 | int(words[1])) % 2**63)


# --------------------------------------------------------------------------- the layer
def _like(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """``t`` in x's dtype when autocast is off (e.g. a float32 trained bias on a bf16 base)."""
    if t is None or t.dtype == x.dtype or torch.is_autocast_enabled(x.device.type):
        return t
    return t.to(x.dtype)


class OrthogonalLayer(AdaptedLayer):
    """y = W_fixed x + A (B x) + b, with W_fixed a buffer and A, B (and b) trainable.

    Buffers (all in the state dict): ``w_fixed`` [out, in], ``rosa_indices`` [r] (the directions of
    the current subspace; -1 before the first sampling). ``w_fixed`` is in the base's dtype, except
    that with ``fp32_master`` a half-precision W_fixed is kept in float32 (see "bf16 drift" above);
    the forward and a merged layer use the base's dtype (``compute_dtype``) either way.
    """

    def __init__(self, base: nn.Module, rank: int, layer_index: int, train_bias: bool, fp32_master: bool = False):
        super().__init__(base)
        self.rank, self.layer_index = rank, layer_index
        weight = dense_weight(base)  # [out, in], dequantised if 4-bit (the seam)
        self.compute_dtype = weight.dtype
        master = torch.float32 if fp32_master and weight.dtype in (torch.bfloat16, torch.float16) else weight.dtype
        self.register_buffer("w_fixed", weight.to(master, memory_format=torch.contiguous_format, copy=True))
        base.weight = None  # held once, as w_fixed (no copy of W in the base)
        device = weight.device
        self.rosa_A = nn.Parameter(torch.zeros(self.out_features, rank, device=device))
        self.rosa_B = nn.Parameter(torch.zeros(rank, self.in_features, device=device))
        self.register_buffer("rosa_indices", torch.full((rank,), -1, dtype=torch.long, device=device))
        if base.bias is not None:
            base.bias.requires_grad_(train_bias)

    @property
    def weight(self) -> torch.Tensor:  # HF code reads `.weight.dtype` / `.device`
        return self.w_fixed

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def fused_path(self, x: torch.Tensor) -> bool:
        """Whether ``_LowRankLinear`` (lora.py, scale 1, its factors (B, A)) computes this call: no
        autocast, W_fixed, A, B, x (and the bias) in one dtype."""
        bias = self.base.bias
        return (
            not torch.is_autocast_enabled(x.device.type)
            and not self.w_fixed.requires_grad
            and x.dtype == self.w_fixed.dtype == self.rosa_A.dtype == self.rosa_B.dtype
            and (bias is None or bias.dtype == x.dtype)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_path(x):  # W_fixed x + b + A (B x) in one function, A B's sums accumulated by the GEMMs
            return _LowRankLinear.apply(x, self.w_fixed, self.base.bias, self.rosa_B, self.rosa_A, 1.0)
        y = F.linear(x, _like(self.w_fixed, x), _like(self.base.bias, x))  # a float32 master is cast here
        h = x.to(self.rosa_A.dtype)
        return y + F.linear(F.linear(h, self.rosa_B), self.rosa_A).to(y.dtype)

    def delta_weight(self) -> torch.Tensor:
        """A B, [out, in]: the change relative to W_fixed (not to the pretrained weight)."""
        return self.rosa_A.float() @ self.rosa_B.float()

    def merged_weight(self) -> torch.Tensor:
        """W_fixed + A B in float32, [out, in]."""
        return self.w_fixed.float() + self.delta_weight()

    @torch.no_grad()
    def merged_base(self) -> nn.Module:
        """The base module as a plain layer with weight W_fixed + A B (its bias as trained)."""
        merged = self.merged_weight()
        if is_conv1d(self.base):
            merged = merged.t()
        self.base.weight = nn.Parameter(merged.contiguous().to(self.compute_dtype), requires_grad=False)
        return self.base

    @torch.no_grad()
    def resample(self, selection: str, split: str, generator: torch.Generator) -> None:
        """Merge, SVD in float32 on the layer's device, pick r directions, re-split into NEW
        parameters (so an optimizer sees them as new)."""
        w = self.merged_weight()
        a, b, idx = subspace_factors(w, self.rank, selection, split, generator)
        self.w_fixed = (w - a @ b).to(self.w_fixed.dtype)
        self.rosa_A = nn.Parameter(a.to(self.rosa_A.dtype).contiguous())
        self.rosa_B = nn.Parameter(b.to(self.rosa_B.dtype).contiguous())
        self.rosa_indices = idx

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.rank}"


# --------------------------------------------------------------------------- the method
@register("rosa-orthogonal", RosaOrthogonalConfig, aliases=("rosa",))  # the ROSA paper's name
class RosaOrthogonal(Method):
    def __init__(self, cfg: Any, seed: int = 0):
        super().__init__(cfg, seed)
        self.last_sampled_step: int | None = None
        self.samples = 0
        self.resample_seconds = 0.0

    # -- building
    def prepare(self, model: nn.Module) -> nn.Module:
        """Freeze the model and wrap the target layers. No SVD here (see the module docstring)."""
        cfg = self.cfg

        def make_layer(base: nn.Module, index: int) -> OrthogonalLayer:
            if hasattr(base.weight, "get_original_weight") and index == 0:
                log.warning(
                    "rosa-orthogonal on a 4-bit base: W_fixed is kept dense (%s), so adapted layers "
                    "use no less memory than a bf16 base",
                    dense_weight(base).dtype,
                )
            return OrthogonalLayer(
                base,
                resolve_rank(cfg.rank, *linear_shape(base)),
                index,
                bool(cfg.train_bias),
                fp32_master=cfg.resample_every != "never",
            )

        self.target_names = wrap_target_modules(model, cfg.target_modules, make_layer)
        return model

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        for out_features, in_features in shapes.values():
            resolve_rank(self.cfg.rank, out_features, in_features)

    def period(self, ctx: StepContext) -> int | None:
        every = self.cfg.resample_every
        if every == "epoch":
            return max(int(ctx.steps_per_epoch), 1)
        if every == "never":
            return None
        return int(every)

    # -- hooks
    def before_step(self, ctx: StepContext) -> LoopRequest | None:
        period = self.period(ctx)
        due = ctx.phase_step == 0 if period is None else ctx.phase_step % period == 0
        if not due or self.last_sampled_step == ctx.step:
            return None
        self.resample(ctx.model, ctx.step)
        return LoopRequest(rebuild_optimizer=True)

    def resample(self, model: nn.Module, step: int) -> float:
        """Merge and re-split every layer at optimizer step ``step``; returns the seconds it took."""
        layers = [m for m in adapted_layers(model).values() if isinstance(m, OrthogonalLayer)]
        device = layers[0].w_fixed.device if layers else torch.device("cpu")
        started = time.perf_counter()
        for layer in layers:
            layer.resample(self.cfg.selection, self.cfg.split, subspace_generator(self.seed, step, layer.layer_index))
            # every rank draws the same subspace; rank 0's split is authoritative (SVDs may differ in the last bits)
            distributed.broadcast_tensors([layer.w_fixed, layer.rosa_A, layer.rosa_B, layer.rosa_indices])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        self.last_sampled_step, self.samples = step, self.samples + 1
        self.resample_seconds += elapsed
        log.info(
            "rosa-orthogonal: resampled %d subspaces at step %d (%s, split %s) in %.2f s (merge + float32 SVD on %s)",
            len(layers),
            step,
            self.cfg.selection,
            self.cfg.split,
            elapsed,
            device,
        )
        return elapsed

    def describe(self) -> str:
        last = "never sampled" if self.last_sampled_step is None else f"last sampled at step {self.last_sampled_step}"
        return (
            f"rosa-orthogonal (rank {self.cfg.rank}, {self.cfg.selection}, resample every "
            f"{self.cfg.resample_every}, {self.samples} samplings, {last})"
        )

    # -- state (tensors: the default, i.e. A, B, biases, w_fixed, rosa_indices of every layer)
    def write_once_keys(self, names) -> tuple[str, set[str]]:
        """W_fixed changes only at a resample: checkpoints write it once per sampling."""
        return f"sample{self.samples}-step{self.last_sampled_step}", {n for n in names if n.endswith(".w_fixed")}

    def extra_state(self) -> dict:
        return {
            "last_sampled_step": self.last_sampled_step,
            "samples": self.samples,
            "resample_seconds": self.resample_seconds,
        }

    def load_extra_state(self, state: dict) -> None:
        self.last_sampled_step = state.get("last_sampled_step")
        self.samples = int(state.get("samples", 0))
        self.resample_seconds = float(state.get("resample_seconds", 0.0))
