"""fnmodel=peft with PEFT's prompt-learning types (virtual tokens): our loss equals PEFT's own, they
generate what their training forward predicts (batched and left padded, greedy and beam search), and
their checkpoint state rebuilds the same model."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rosa.evaluation.generate import generate, left_pad
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


def greedy_by_training_forward(model, prompt: list[int], steps: int) -> torch.Tensor:
    """The reference: each step's next-token logits from a full forward over one unpadded row, as
    training runs it, continued greedily. ``[steps, vocab]``."""
    ids, logits = torch.tensor([prompt]), []
    for _ in range(steps):
        logits.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1])
        ids = torch.cat([ids, logits[-1].argmax().view(1, 1)], dim=1)
    return torch.stack(logits)


@pytest.mark.parametrize("peft_type", VIRTUAL_TOKEN_TYPES)
@torch.no_grad()
def test_virtual_tokens_generate_as_trained_batched_and_left_padded(peft_type, one_thread):
    _, model = prompt_learning_model(peft_type)
    model.eval()
    tokenizer = tiny_tokenizer()
    texts = ["name[Alimentum], area[city centre]", "name[X]", "eat[Y] near"]
    prompts = [tokenizer(t).input_ids for t in texts]
    expected = torch.stack([greedy_by_training_forward(model, p, 6) for p in prompts], dim=1)
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None,
                    output_logits=True, return_dict_in_generate=True)
    for use_cache in (True, False):  # without a cache every step runs the whole sequence again
        out = model.generate(input_ids=ids, attention_mask=mask, use_cache=use_cache, **settings)
        torch.testing.assert_close(torch.stack(out.logits), expected, rtol=1e-4, atol=1e-4)

    # beam search as evaluation runs it (E2E's settings, 3 beams): a batch gives what each prompt alone gives
    beams = dict(max_new_tokens=6, num_beams=3, no_repeat_ngram_size=4, early_stopping=True)
    batched = generate(model, tokenizer, texts, batch_size=3, **beams).texts
    assert batched == [generate(model, tokenizer, [t], batch_size=1, **beams).texts[0] for t in texts]
    assert any(batched)


@pytest.mark.parametrize("peft_type, config", [("PROMPT_TUNING", {}), ("P_TUNING", {}), ("PREFIX_TUNING", {}),
                                                ("PREFIX_TUNING", {"prefix_projection": True}), ("CARTRIDGE", {})])
@torch.no_grad()
def test_virtual_tokens_state_rebuilds_the_model_and_peft_loads_the_export(peft_type, config, tmp_path, one_thread):
    """A checkpoint (our state) must rebuild the trainable model; PEFT saves only the prompt encoder's
    output, which loses P-tuning's MLP and a prefix projection (see the module docstring)."""
    from peft import PeftModel

    method, model = prompt_learning_model(peft_type, seed=1, **config)
    other_method, other = prompt_learning_model(peft_type, seed=2, **config)
    other_method.load_state_dict(other, method.state_dict(model))
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    ours = model(input_ids=ids).logits
    torch.testing.assert_close(other(input_ids=ids).logits, ours, rtol=0, atol=0)

    method.save_adapter(model, tmp_path / "adapter")
    theirs = PeftModel.from_pretrained(tiny_model(tiny_tokenizer()), tmp_path / "adapter")
    torch.testing.assert_close(theirs(input_ids=ids).logits, ours, rtol=1e-5, atol=1e-5)
