"""The shared prompt prefix (``train.shared_prefix``): computed once, it gives the plain path's loss and
gradients for every method (fp32 rounding), RoSA's mask statistic, and generation's outputs; a batch
without a common prefix takes the plain path."""

from __future__ import annotations

import pytest
import torch

from rosa.config import compose, validate
from rosa.methods import StepContext, build_model
from rosa.methods.rosa_robust.masks import GradientCollector
from rosa.models import resolve_precision
from rosa.models.loss import example_mean_loss, token_loss_sum
from rosa.models.shared_prefix import MIN_SHARED_PREFIX, prompts_prefix_length, shared_prefix_length

PREFIX = 40
CASES = {
    "lora": ["fnmodel=lora", "fnmodel.dropout=0"],
    "dora": ["fnmodel=dora", "fnmodel.dropout=0"],
    "rosa-robust": [
        "fnmodel=rosa-robust",
        "fnmodel.rank=2",
        "fnmodel.density=0.05",
        "fnmodel.dropout=0",
        "fnmodel.mask_criterion=random",
    ],
    "spa": ["fnmodel=spa", "fnmodel.density=0.05", "fnmodel.mask_criterion=random"],
    "rosa-orthogonal": ["fnmodel=rosa-orthogonal", "fnmodel.rank=4"],
    "fft": ["fnmodel=fft"],
    "peft-lora": ["fnmodel=peft", "fnmodel.peft_type=LORA", "+fnmodel.config.r=4", "+fnmodel.config.lora_dropout=0"],
    "peft-ia3": ["fnmodel=peft", "fnmodel.peft_type=IA3"],
}


def prefix_batch(seed: int = 0, rows: int = 4, suffix: int = 12) -> dict[str, torch.Tensor]:
    """Rows of one 40-token prefix then their own tokens, right-padded to different lengths; the
    labels start 2 tokens after the prefix (the prompt's own tail carries no loss)."""
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(3, 250, (1, PREFIX), generator=g)
    ids = torch.cat([prefix.expand(rows, -1), torch.randint(3, 250, (rows, suffix), generator=g)], dim=1)
    mask = torch.ones_like(ids)
    for row, length in enumerate([suffix, suffix - 5, suffix - 3, suffix - 7][:rows]):
        mask[row, PREFIX + length :] = 0
    ids[mask == 0] = 0
    labels = ids.clone()
    labels[:, : PREFIX + 2] = -100
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def method_model(overrides: list[str]):
    run = validate(compose(["model=tiny", "device=cpu", "precision=fp32", *overrides]))  # a later precision= wins
    model, _tokenizer, method = build_model(
        run, torch.device("cpu"), resolve_precision(run.precision, torch.device("cpu"))
    )
    ctx = StepContext(
        model=model, step=0, phase_step=0, epoch=0, steps_per_epoch=10, total_steps=10, micro_batches_per_step=1
    )
    method.before_step(ctx)  # masks (random criterion) and ROSA's first subspace, as the loop's first step
    params = [p for g in method.param_groups(model, run.train) for p in g["params"]]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move off the zero-initialised factors, so every gradient is non-zero
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.train(), params


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach().clamp(min=1e-30))


@pytest.mark.parametrize("name", list(CASES))
def test_loss_and_gradients_equal_the_plain_path(name, one_thread):
    model, params = method_model(CASES[name])
    batch = prefix_batch()
    assert shared_prefix_length(batch, minimum=0) == PREFIX
    for loss_of in (
        lambda p: token_loss_sum(model, batch, prefix_length=p)[0],  # train.loss_norm=tokens
        lambda p: example_mean_loss(model, batch, n_examples=4, prefix_length=p),
    ):  # =examples
        plain = loss_of(0)
        plain_grads = torch.autograd.grad(plain, params)
        shared = loss_of(PREFIX)
        shared_grads = torch.autograd.grad(shared, params)
        assert relative_error(shared, plain) <= 1e-5
        assert all(g.abs().max() > 0 for g in plain_grads)
        assert max(relative_error(s, p) for s, p in zip(shared_grads, plain_grads)) <= 1e-5


def test_rosa_mask_statistic_equals_the_plain_path(one_thread):
    """RoSA's Fisher statistic: the mean over micro-batches of the squared micro-batch gradient G^T X,
    whose shared-path gradient arrives in two parts (prefix and suffixes)."""
    from rosa.methods.rosa_robust.masks import nnz_for, top_k_mask

    scores = {}
    for prefix in (0, PREFIX):
        model, _ = method_model(CASES["rosa-robust"][:-1] + ["fnmodel.mask_criterion=grad-fisher"])
        layers = {n: m for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base")}
        collector = GradientCollector(layers, "grad-fisher", samples=2).attach()
        collector.begin_step()
        for seed in (0, 1):
            token_loss_sum(model, prefix_batch(seed), prefix_length=prefix)[0].backward()
        collector.end_step()
        assert set(collector.counts.values()) == {2}
        scores[prefix] = collector.scores()
    for name, plain in scores[0].items():
        assert relative_error(scores[PREFIX][name], plain) <= 1e-4  # squares of gradients equal to 1e-5
    masks = {
        p: {n: top_k_mask(score, nnz_for(0.05, *score.shape)) for n, score in s.items()} for p, s in scores.items()
    }
    assert all(torch.equal(masks[PREFIX][n], mask) for n, mask in masks[0].items())


def test_which_batches_share_a_prefix():
    batch = prefix_batch()
    assert shared_prefix_length(batch) == PREFIX >= MIN_SHARED_PREFIX
    late = {**batch, "labels": batch["labels"].clone()}
    late["labels"][1, 30] = 7  # a labelled token at 30: the prefix ends at 29
    assert shared_prefix_length(late) == 29
    late["labels"][1, 10] = 7  # at 10: 9 tokens, under the minimum
    assert shared_prefix_length(late) == 0 and shared_prefix_length(late, minimum=0) == 9
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][2, 0] += 1  # no common first token: the plain path
    assert shared_prefix_length(other) == 0
    short = {k: v.clone() for k, v in batch.items()}
    short["input_ids"][1, MIN_SHARED_PREFIX - 1] += 1  # rows differ from the 32nd token: under the minimum
    assert shared_prefix_length(short) == 0 and shared_prefix_length(short, minimum=0) == MIN_SHARED_PREFIX - 1
    assert shared_prefix_length({k: v[:1] for k, v in batch.items()}) == 0  # one row: nothing to share
    assert prompts_prefix_length([[1] * 40 + [2], [1] * 40 + [3, 4]]) == 40
    assert prompts_prefix_length([[1] * 40, [1] * 45]) == 39  # every prompt keeps a token of its own
    assert prompts_prefix_length([[1] * 40 + [2], [9] + [1] * 40]) == 0


VIGGO_LIKE = (
    "Given a target sentence construct the underlying meaning representation of the input sentence as a "
    "single function with attributes and attribute values. Sentence: {} Output:"
)
SENTENCES = [
    "Halo is a great shooter.",
    "I liked Portal 2 a lot",
    "Is Tetris rated E?",
    "Minecraft, 2011, by Mojang.",
    "Do you play Doom on PC?",
    "Skyrim",
]


@pytest.fixture(scope="module")
def varied_model():
    """The tiny model with large random weights: its continuations differ between prompts (the
    seeded init repeats one character), so equal outputs say something."""
    from rosa.models.tiny import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).eval()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.25, generator=generator)
    return model, tokenizer


@pytest.mark.parametrize("beams", [1, 4])
def test_generation_outputs_are_identical(varied_model, beams, one_thread, monkeypatch):
    from rosa.evaluation import generate as generation

    model, tokenizer = varied_model
    prompts = [VIGGO_LIKE.format(s) for s in SENTENCES]
    settings = dict(batch_size=4, max_new_tokens=10, num_beams=beams, no_repeat_ngram_size=4 if beams > 1 else 0)
    plain = generation.generate(model, tokenizer, prompts, shared_prefix=False, **settings)
    prefills = []
    real_prefill = generation.prefix_cache
    monkeypatch.setattr(
        generation, "prefix_cache", lambda m, ids, n: prefills.append((ids.shape[1], n)) or real_prefill(m, ids, n)
    )
    shared = generation.generate(model, tokenizer, prompts, shared_prefix=True, **settings)
    assert len(set(plain.texts)) >= 4  # the outputs differ between prompts
    assert shared.texts == plain.texts and shared.new_tokens == plain.new_tokens
    assert [n for _, n in prefills] == [4 * beams, 2 * beams]  # both batches prefilled once, a row per beam
    assert all(length > 100 for length, _ in prefills)


@pytest.mark.parametrize("precision", ["bf16", "fp16", "nf4"])
def test_every_precision_gives_the_plain_loss_and_gradients(precision, one_thread):
    """Half-precision autocast and 4-bit base weights: the two paths agree to the precision's rounding
    (the prefix runs at batch 1, so its matmuls round differently)."""
    from contextlib import nullcontext

    model, params = method_model(["fnmodel=lora", "fnmodel.dropout=0", f"precision={precision}"])
    dtype = resolve_precision(validate(compose([f"precision={precision}"])).precision, torch.device("cpu"))["autocast"]
    batch = prefix_batch()
    results = {}
    for prefix in (0, PREFIX):
        with torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext():
            loss = token_loss_sum(model, batch, prefix_length=prefix)[0]
        results[prefix] = loss.detach(), torch.autograd.grad(loss, params)
    (plain, plain_grads), (shared, shared_grads) = results[0], results[PREFIX]
    assert relative_error(shared, plain) <= 1e-2
    assert max(relative_error(s.float(), p.float()) for s, p in zip(shared_grads, plain_grads)) <= 5e-2


@pytest.mark.parametrize("peft_type", ["PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING"])
def test_virtual_token_types_take_the_plain_path(peft_type, tmp_path):
    """PEFT types that put virtual tokens in front (or in the cache) cannot share a prefix: the loop's
    choice is "off", said in the log."""
    from rosa.models.shared_prefix import unsupported_reason
    from rosa.training.loop import Trainer

    model, _ = method_model(["fnmodel=peft", f"fnmodel.peft_type={peft_type}", "+fnmodel.config.num_virtual_tokens=4"])
    assert "virtual tokens" in unsupported_reason(model)
    assert unsupported_reason(method_model(CASES["peft-lora"])[0]) is None
    run = validate(
        compose(
            [
                "model=tiny",
                "device=cpu",
                "dataset=viggo",
                "dataset.sample_rows.train=4",
                "dataset.sample_rows.validation=2",
                "fnmodel=peft",
                f"fnmodel.peft_type={peft_type}",
                "+fnmodel.config.num_virtual_tokens=4",
            ]
        )
    )
    assert Trainer(run, tmp_path).shared_prefix == "off"
