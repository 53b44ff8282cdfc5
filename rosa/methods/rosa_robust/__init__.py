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

Masks (``masks.py``)
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

Files: ``config.py`` (the keys, the budget arithmetic), ``layer.py`` (``RobustLayer``), ``masks.py``
(gradient statistics, top-k, the masks file, read and checked once), ``method.py`` (the schedule as
a state machine, state and resume).
"""

from __future__ import annotations

from rosa.methods.rosa_robust.config import RosaRobustConfig, SpAConfig, density_for_budget, trainable_count
from rosa.methods.rosa_robust.layer import RobustLayer
from rosa.methods.rosa_robust.method import Phase, RosaRobust, SpA

__all__ = [
    "Phase",
    "RobustLayer",
    "RosaRobust",
    "RosaRobustConfig",
    "SpA",
    "SpAConfig",
    "density_for_budget",
    "trainable_count",
]
