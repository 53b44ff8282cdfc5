"""A batch's shared prompt prefix, computed once (``train.shared_prefix``).

RoSA's ViGGO prompt is one fixed instruction: with SmolLM2's tokenizer the first 166 of ~245 tokens
of every example are the same, and SQL's prompt opens with a fixed instruction too. A micro-batch of
B such examples computes that prefix B times, forward and backward. Causal attention lets it run once:

    prefix  p = ids[0, :P]                     (the batch's longest common prefix, as token ids)
    K, V    = model(p) with the KV cache on    (batch 1: P positions instead of B P)
    suffix  model(ids[:, P:], cache = K, V expanded to B rows as a view, positions P, P + 1, ...)

Each suffix row attends to the same keys and values it would have computed itself, so every
suffix state, and the loss, are the plain forward's (up to float rounding: the prefix's matmuls run
at batch 1). Backward through the expansion sums the B rows' gradients into the single prefix copy:
the gradient of a weight is the same sum over the micro-batch's positions, so every parameter
gradient is the plain path's, and so is RoSA's Fisher statistic (``rosa.methods.rosa_robust.masks``
squares a micro-batch's summed gradient, whatever number of forward calls made it).

Conditions, checked per micro-batch (:func:`shared_prefix_length`): token ids are compared, never
strings (BPE can merge differently at the boundary); the prefix ends before the first labelled
position (the prefix's last state predicts token P, which must carry no loss, so the prefix needs no
LM head); every row keeps at least one suffix token; and ``auto`` shares only from
:data:`MIN_SHARED_PREFIX` tokens and at micro-batch >= 2. Right padding stays in the suffix, so the
plain path's positions are unchanged.

One semantic difference: dropout (LoRA's adapter dropout, a model's own dropout) draws one mask for
the shared prefix instead of one per example's copy. ``docs/benchmarks.md`` (section
``shared-prefix``) measures what that does to a lora run; ``conf/config.yaml`` states the choice.

Models whose cache is not a per-layer key/value list (sliding-window attention, recurrent
states) or that run gradient checkpointing (HF then turns the cache off in training), and wrappers
that add virtual tokens (PEFT's prompt learning), take the plain path: :func:`unsupported_reason`.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
MIN_SHARED_PREFIX = (
    16  # tokens: SQL's instruction (20) shares, E2E's "Input: name[" (4-5) and GSM8k's "Question:" (2) do not
)
MODES = ("auto", "off")


def common_prefix_length(rows: torch.Tensor, mask: torch.Tensor | None = None) -> int:
    """The number of leading columns in which every row has the same token id (and, with ``mask``,
    a real token): rows of token ids ``[batch, length]``."""
    same = (rows == rows[:1]).all(dim=0)
    if mask is not None:
        same &= (mask != 0).all(dim=0)
    return int(same.int().cumprod(dim=0).sum())


def shared_prefix_length(batch: dict[str, torch.Tensor], minimum: int = MIN_SHARED_PREFIX) -> int:
    """How many leading tokens of ``batch`` (right-padded ``input_ids``/``attention_mask``/``labels``)
    can be computed once: the common prefix, cut so that token P carries no loss and every row keeps a
    suffix token; 0 when that is under ``minimum`` tokens or the batch has one row."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if ids.shape[0] < 2:
        return 0
    length = common_prefix_length(ids, mask)
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if len(labelled):  # the state at P - 1 predicts token P: it must carry no loss
        length = min(length, int(labelled[0]) - 1)
    length = min(length, int(mask.sum(dim=1).min()) - 1)  # every row keeps >= 1 real suffix token
    return length if length >= max(minimum, 1) else 0


def prompts_prefix_length(rows: list[list[int]], minimum: int = MIN_SHARED_PREFIX) -> int:
    """The common prefix of prompts' token ids for generation, leaving every prompt >= 1 token of its
    own (the first decoding step needs an input); 0 under ``minimum`` tokens or for one prompt."""
    if len(rows) < 2:
        return 0
    limit = min(len(r) for r in rows) - 1
    length = 0
    while length < limit and all(r[length] == rows[0][length] for r in rows):
        length += 1
    return length if length >= max(minimum, 1) else 0


def unsupported_reason(model) -> str | None:
    """Why ``model`` must take the plain path (None: it can share a prefix)."""
    config = getattr(model, "config", None)
    if getattr(model, "peft_config", None) is not None:
        active = model.peft_config.get(getattr(model, "active_adapter", "default"))
        if active is not None and getattr(active, "is_prompt_learning", False):
            return "its virtual tokens take the front positions"
    checkpointing = (
        "is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing") else "is_gradient_checkpointing"
    )
    if getattr(model, checkpointing, False):
        return "gradient checkpointing turns the model's KV cache off in training"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "a sliding-window cache may drop prefix keys"
    return None


def expand_cache(cache, batch_size: int):
    """Expand a batch-1 KV cache to ``batch_size`` rows in place, as views (no copy): every row reads
    the same prefix keys and values, and their gradients sum into the one copy."""
    layers = getattr(cache, "layers", None)
    if layers is None or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        raise TypeError(
            f"the model's cache ({type(cache).__name__}) is not a per-layer key/value cache; "
            "set train.shared_prefix=off"
        )
    for layer in layers:
        layer.keys = layer.keys.expand(batch_size, *layer.keys.shape[1:])
        layer.values = layer.values.expand(batch_size, *layer.values.shape[1:])
    return cache


def suffix_positions(prefix_length: int, suffix_length: int, batch_size: int, device) -> torch.Tensor:
    """Position ids of the suffix columns: P, P + 1, ... in every row (right padding keeps them)."""
    return torch.arange(prefix_length, prefix_length + suffix_length, device=device).expand(batch_size, -1)
