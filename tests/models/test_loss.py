"""The shared token loss: the LM head only at labelled positions gives the full forward's loss and
gradients exactly (up to float summation order), for every method's trainable parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rosa.models.loss import token_loss_sum
from rosa.models.tiny import tiny_model, tiny_tokenizer


def full_logits_loss(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")


def batch_with_prompts():
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # right padding
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    labels[2, 9:] = -100
    labels[1, 5:7] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class Headless(torch.nn.Module):
    """A wrapper that does not expose its output layer: the loss falls back to the full logits."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, **kw):
        return self.inner(**kw)


def test_labelled_head_equals_full_logits_loss_and_gradients(one_thread):
    model = tiny_model(tiny_tokenizer())
    batch = batch_with_prompts()
    loss, n = token_loss_sum(model, batch)
    grads = torch.autograd.grad(loss, [p for p in model.parameters()])
    expected = full_logits_loss(model, batch)
    expected_grads = torch.autograd.grad(expected, [p for p in model.parameters()])
    assert n == int((batch["labels"][:, 1:] != -100).sum()) == 7 + 5 + 4
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-5)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    assert not model.get_output_embeddings()._forward_pre_hooks  # the hook is removed


def test_no_labelled_position_and_models_without_a_head(one_thread):
    model = tiny_model(tiny_tokenizer())
    batch = batch_with_prompts()
    batch["labels"][:] = -100
    loss, n = token_loss_sum(model, batch)
    assert n == 0 and float(loss.detach()) == 0.0

    batch = batch_with_prompts()
    loss, _ = token_loss_sum(Headless(model), batch)
    torch.testing.assert_close(loss, full_logits_loss(model, batch))
