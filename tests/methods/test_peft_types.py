"""fnmodel=peft with PEFT's prompt-learning types (virtual tokens): our loss equals PEFT's own."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rosa.methods.peft_baseline import VIRTUAL_TOKEN_TYPES, PeftBaseline, PeftMethodConfig
from rosa.models.loss import token_loss_sum
from rosa.models.tiny import tiny_model, tiny_tokenizer
from tests.models.test_loss import Headless, batch_with_prompts


def prompt_learning_model(peft_type: str, seed: int = 0, **config):
    """The tiny model with a randomly initialised prompt-learning adapter, as ``fnmodel=peft`` builds it."""
    config = {"num_virtual_tokens": 4, **config}
    method = PeftBaseline(PeftMethodConfig(name="peft", peft_type=peft_type, config=config), seed=seed)
    return method, method.prepare(tiny_model(tiny_tokenizer()))


@pytest.mark.parametrize("peft_type", VIRTUAL_TOKEN_TYPES)
def test_virtual_tokens_loss_equals_full_logits_and_peft_loss(peft_type, one_thread):
    _, model = prompt_learning_model(peft_type)
    batch = batch_with_prompts()
    params = [p for p in model.parameters() if p.requires_grad]
    loss, n = token_loss_sum(model, batch)
    grads = torch.autograd.grad(loss, params)

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    n_virtual = 0 if peft_type in ("PREFIX_TUNING", "CARTRIDGE") else 4  # those two put theirs in the KV cache
    assert logits.shape[1] == n_virtual + batch["input_ids"].shape[1]
    labels = batch["labels"][:, 1:]
    expected = F.cross_entropy(logits[:, n_virtual:-1].flatten(0, 1), labels.flatten(), reduction="sum")
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-5)
    for g, e in zip(grads, torch.autograd.grad(expected, params)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    # PEFT's own loss (it pads the labels for the virtual tokens itself) is the mean of the same terms
    peft_loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(loss / n, peft_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(token_loss_sum(Headless(model), batch)[0], expected, rtol=1e-6, atol=1e-5)
