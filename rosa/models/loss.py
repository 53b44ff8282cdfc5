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

How a step averages its token losses (``train.loss_norm``):

- ``tokens`` (default): the step's summed target-token loss (:func:`token_loss_sum`) over its number
  of target tokens (divided in the loop), so every token weighs the same and a long answer weighs
  more than a short one. The ROSA paper's HF loss on one batch of 8 does this.
- ``examples``: the mean over the step's examples of each example's mean target-token loss
  (:func:`example_mean_loss`), so every example weighs the same. The RoSA paper's composer setup
  does this: HF's loss (a per-example mean at micro-batch 1) scaled by 1/32 over 32 accumulated
  micro-batches. RoSA's Fisher statistic is formed from the gradient of this loss, so it carries the
  same weighting (``rosa.methods.sparse_masks``).

The validation loss stays a mean over tokens (its perplexity) whatever the choice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_loss_sum(model, batch: dict[str, torch.Tensor],
                   weights: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over the target tokens (each times its ``weights`` entry, a
    ``[batch, length - 1]`` tensor, when given), and the number of target tokens."""
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = input_positions(logits, batch["input_ids"])
        losses = F.cross_entropy(logits[:, :-1][keep].float(), labels[keep], reduction="none")
        return _weighted_sum(losses, weights, keep), int(keep.sum())

    def labelled_positions_only(module, args):
        hidden = input_positions(args[0], batch["input_ids"])[:, :-1]  # position t predicts token t + 1
        return (hidden[keep].unsqueeze(0),) + tuple(args[1:])

    handle = head.register_forward_pre_hook(labelled_positions_only)
    try:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        handle.remove()
    losses = F.cross_entropy(logits[0].float(), labels[keep], reduction="none")
    return _weighted_sum(losses, weights, keep), int(keep.sum())


def input_positions(states: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """The positions of ``states`` (``[batch, model length, ...]`` hidden states or logits) that belong
    to ``input_ids``: the last ``input length`` ones, dropping virtual tokens a wrapper prepended."""
    extra = states.shape[1] - input_ids.shape[1]
    if extra < 0:
        raise ValueError(f"the model returned {states.shape[1]} positions for {input_ids.shape[1]} input tokens")
    return states[:, extra:]


def _weighted_sum(losses: torch.Tensor, weights: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor:
    return losses.sum() if weights is None else (losses * weights.to(losses.device)[keep]).sum()


def example_mean_loss(model, batch: dict[str, torch.Tensor], n_examples: int) -> torch.Tensor:
    """Sum over ``batch``'s rows of each row's mean target-token loss, over ``n_examples`` (the step's
    examples): ``token_loss_sum`` with each token weighted by 1 / (its row's targets * n_examples)."""
    labels = batch["labels"][:, 1:]
    per_row = (labels != IGNORE_INDEX).sum(dim=1).clamp(min=1) * n_examples
    weights = (1.0 / per_row.float()).unsqueeze(1).expand_as(labels)
    return token_loss_sum(model, batch, weights)[0]
