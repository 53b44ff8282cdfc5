"""The next-token loss that training and evaluation share, with the LM head only where labels exist.

Supervised fine-tuning scores only the response tokens (~15% of a ViGGO sequence), but a plain
forward computes the vocabulary-sized logits at every position: for a 49k vocabulary that is most
of the activation memory and a fifth of the FLOPs of a 135M model. A pre-hook on the output layer
(``model.get_output_embeddings()``) hands it only the hidden states of labelled positions, so the
logits are ``(1, n_targets, vocab)``; the loss is the same sum (a test checks equality with the
full forward). The whole model still runs through its own ``forward``, so wrappers (FSDP, PEFT,
our adapters) see an ordinary call. Models without an output layer fall back to the full logits.

A wrapper may run a longer sequence than ``input_ids``: PEFT's prompt tuning and P-tuning prepend
their virtual tokens to the input embeddings, so the hidden states (and logits) have that many
extra positions *in front*. They are no input token's prediction, so the offset is read from the
shapes (model length - input length) and those leading positions are dropped. (PEFT's prefix
tuning puts its virtual tokens in the attention's key/value cache: the length is unchanged.)

A micro-batch whose rows open with the same prompt (ViGGO's instruction) can compute that prefix
once (``prefix_length``, ``train.shared_prefix``): :func:`prefix_cache` runs it as batch 1 and the
rows' suffixes attend to its cached keys and values (``rosa/models/shared_prefix.py`` has the math).

How a step averages its token losses (``train.loss_norm``):

- ``tokens`` (default): the step's summed target-token loss (:func:`token_loss_sum`) over its number
  of target tokens (divided in the loop), so every token weighs the same and a long answer weighs
  more than a short one. The ROSA paper's HF loss on one batch of 8 does this.
- ``examples``: the mean over the step's examples of each example's mean target-token loss
  (:func:`example_mean_loss`), so every example weighs the same. The RoSA paper's composer setup
  does this: HF's loss (a per-example mean at micro-batch 1) scaled by 1/32 over 32 accumulated
  micro-batches. RoSA's Fisher statistic is formed from the gradient of this loss, so it carries the
  same weighting (``rosa.methods.rosa_robust.masks``).

The validation loss stays a mean over tokens (its perplexity) whatever the choice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from rosa.models.shared_prefix import expand_cache, suffix_positions

IGNORE_INDEX = -100


def token_loss_sum(
    model, batch: dict[str, torch.Tensor], weights: torch.Tensor | None = None, prefix_length: int = 0
) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over the target tokens (each times its ``weights`` entry, a
    ``[batch, length - 1]`` tensor, when given), and the number of target tokens.

    ``prefix_length`` P > 0 (from :func:`rosa.models.shared_prefix.shared_prefix_length`): the first P
    tokens are the same in every row and carry no loss; they run once, as batch 1, and the rest of
    every row attends to their cached keys and values. Same sum, up to float rounding."""
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if prefix_length:
        size = ids.shape[0]
        cache = prefix_cache(model, ids[:1, :prefix_length], size)
        ids, keep = ids[:, prefix_length:], keep[:, prefix_length:]
        weights = None if weights is None else weights[:, prefix_length:]
        call = dict(
            attention_mask=mask,
            cache=cache,
            use_cache=False,
            position_ids=suffix_positions(prefix_length, ids.shape[1], size, ids.device),
        )
    else:
        call = dict(attention_mask=mask)
    logits = labelled_logits(model, ids, keep, **call)[1]
    losses = F.cross_entropy(logits.float(), labels[:, prefix_length:][keep], reduction="none")
    return _weighted_sum(losses, weights, keep), int(keep.sum())


def labelled_logits(model, input_ids: torch.Tensor, keep: torch.Tensor, **call) -> tuple:
    """``model(input_ids=input_ids, **call)`` and its logits ``[n, vocab]`` at the positions ``keep``
    (``[batch, length - 1]``: position t predicts token t + 1) selects. With an output layer, it runs
    on those positions' hidden states only (a pre-hook); without one the full logits are cut."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        out = model(input_ids=input_ids, **call)
        return out, input_positions(out.logits, input_ids)[:, :-1][keep]

    def labelled_positions_only(module, args):
        hidden = input_positions(args[0], input_ids)[:, :-1]  # position t predicts token t + 1
        return (hidden[keep].unsqueeze(0),) + tuple(args[1:])

    handle = head.register_forward_pre_hook(labelled_positions_only)
    try:
        out = model(input_ids=input_ids, **call)
    finally:
        handle.remove()
    return out, out.logits[0]


def prefix_cache(model, prefix_ids: torch.Tensor, batch_size: int):
    """Run ``prefix_ids`` (``[1, P]``) once with the KV cache on (the LM head on no position) and
    return the cache expanded to ``batch_size`` rows as views."""
    no_rows = torch.zeros((1, prefix_ids.shape[1] - 1), dtype=torch.bool, device=prefix_ids.device)
    out = labelled_logits(model, prefix_ids, no_rows, attention_mask=torch.ones_like(prefix_ids), use_cache=True)[0]
    if getattr(out, "cache", None) is None:
        raise TypeError(
            f"{type(model).__name__} returned no KV cache for the shared prefix; set train.shared_prefix=off"
        )
    return expand_cache(out.cache, batch_size)


def input_positions(states: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """The positions of ``states`` (``[batch, model length, ...]`` hidden states or logits) that belong
    to ``input_ids``: the last ``input length`` ones, dropping virtual tokens a wrapper prepended."""
    extra = states.shape[1] - input_ids.shape[1]
    if extra < 0:
        raise ValueError(f"the model returned {states.shape[1]} positions for {input_ids.shape[1]} input tokens")
    return states[:, extra:]


def _weighted_sum(losses: torch.Tensor, weights: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor:
    return losses.sum() if weights is None else (losses * weights.to(losses.device)[keep]).sum()


def example_mean_loss(model, batch: dict[str, torch.Tensor], n_examples: int, prefix_length: int = 0) -> torch.Tensor:
    """Sum over ``batch``'s rows of each row's mean target-token loss, over ``n_examples`` (the step's
    examples): ``token_loss_sum`` with each token weighted by 1 / (its row's targets * n_examples)."""
    labels = batch["labels"][:, 1:]
    per_row = (labels != IGNORE_INDEX).sum(dim=1).clamp(min=1) * n_examples
    weights = (1.0 / per_row.float()).unsqueeze(1).expand_as(labels)
    return token_loss_sum(model, batch, weights, prefix_length)[0]


@torch.no_grad()
def batches_token_loss(
    model,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    autocast: torch.dtype | None = None,
    prefix_length: Callable[[dict], int] = lambda batch: 0,
) -> tuple[float, int]:
    """The summed target-token loss and the target-token count over ``batches`` (the validation loss
    of training and the language-modelling evaluation alike), under ``autocast`` when it is a dtype."""
    loss_sum, count = 0.0, 0
    for batch in batches:
        with torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext():
            loss, n = token_loss_sum(
                model, {k: v.to(device) for k, v in batch.items()}, prefix_length=prefix_length(batch)
            )
        loss_sum, count = loss_sum + float(loss), count + n
    return loss_sum, count
