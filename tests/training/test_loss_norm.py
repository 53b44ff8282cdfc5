"""train.loss_norm: ``tokens`` (the step's summed token loss over its target tokens) or ``examples``
(the mean over the step's examples of each one's mean token loss: RoSA's composer + HF setup)."""

import pytest
import torch

from rosa.config import ConfigError, compose, validate
from rosa.models.loss import example_mean_loss, token_loss_sum
from rosa.models.tiny import tiny_model


def make_batch(rows: list[tuple[int, int]], seed: int) -> dict[str, torch.Tensor]:
    """Right-padded rows of (prompt tokens, target tokens) with random ids; labels on the targets only."""
    g = torch.Generator().manual_seed(seed)
    width = max(p + t for p, t in rows)
    ids = torch.randint(3, 200, (len(rows), width), generator=g)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for i, (p, t) in enumerate(rows):
        mask[i, : p + t] = 1
        labels[i, p : p + t] = ids[i, p : p + t]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


STEP = [make_batch([(3, 2), (2, 9)], 0), make_batch([(4, 5)], 1)]  # 3 examples, 16 target tokens


def hf_losses(model, step) -> list[tuple[torch.Tensor, int]]:
    """Per example: HF's causal-LM loss (the mean over its target tokens) and its target-token count."""
    out = []
    for batch in step:
        for row in range(len(batch["input_ids"])):
            one = {k: v[row : row + 1] for k, v in batch.items()}
            out.append((model(**one).loss, int((one["labels"][:, 1:] != -100).sum())))
    return out


def test_examples_and_tokens_weigh_as_documented(tiny_tokenizer, one_thread):
    model = tiny_model(tiny_tokenizer).eval()
    with torch.no_grad():
        examples = sum(example_mean_loss(model, batch, n_examples=3) for batch in STEP)
        tokens = sum(token_loss_sum(model, batch)[0] for batch in STEP) / 16
        per_example = hf_losses(model, STEP)
    torch.testing.assert_close(examples, sum(loss for loss, _ in per_example) / 3)  # every example alike
    torch.testing.assert_close(tokens, sum(loss * n for loss, n in per_example) / 16)  # every token alike
    assert abs(float(examples) - float(tokens)) > 1e-3  # answers of 2, 9 and 5 tokens: the two differ


def test_a_row_without_targets_adds_nothing(tiny_tokenizer, one_thread):
    model = tiny_model(tiny_tokenizer).eval()
    with torch.no_grad():
        with_empty = example_mean_loss(model, make_batch([(3, 2), (5, 0)], 0), n_examples=1)
        alone = example_mean_loss(model, make_batch([(3, 2)], 0), n_examples=1)
    torch.testing.assert_close(with_empty, alone)


def test_loss_norm_key():
    assert validate(compose([])).train.loss_norm == "tokens"
    assert validate(compose(["train.loss_norm=examples"])).train.loss_norm == "examples"
    with pytest.raises(ConfigError, match="tokens, examples") as err:
        validate(compose(["train.loss_norm=sequences"]))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("loss_norm", ["tokens", "examples"])
def test_the_loop_step_loss(loss_norm, tmp_path, one_thread):
    from rosa.training.loop import Trainer

    run = validate(
        compose(
            [
                f"train.loss_norm={loss_norm}",
                "train.batch_size=4",
                "train.micro_batch_size=2",
                "fnmodel.dropout=0.0",
                "dataset.sample_rows.train=8",
                "dataset.sample_rows.validation=2",
                "device=cpu",
            ]
        )
    )
    trainer = Trainer(run, tmp_path)
    with torch.no_grad():
        per_example = hf_losses(trainer.model, trainer.batches.step(0))
    if loss_norm == "examples":
        expected = sum(loss for loss, _ in per_example) / len(per_example)
    else:
        expected = sum(loss * n for loss, n in per_example) / sum(n for _, n in per_example)
    assert trainer.train_step()["loss"] == pytest.approx(float(expected), rel=1e-5)
