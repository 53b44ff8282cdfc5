"""fnmodel=peft across PEFT's types: every listed type and every ``+experiment=baselines/*`` preset trains
2 steps and evaluates 2 rows on the tiny model, merged where it can be and unmerged otherwise. The
prompt-learning types (virtual tokens) get PEFT's own loss, generate what their training forward
predicts (batched and left padded, greedy and beam search), and their checkpoint state rebuilds the
same model."""

from __future__ import annotations

import json
import math

import peft
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from rosa.config import compose, rewrite_overrides, validate
from rosa.data import build_train_features, collate_batch, get_spec, load_examples
from rosa.evaluation.generate import generate, left_pad
from rosa.evaluation.load import load_run
from rosa.methods.peft_baseline import VIRTUAL_TOKEN_TYPES, PeftBaseline, PeftMethodConfig
from rosa.models.loss import token_loss_sum
from rosa.models.tiny import tiny_model, tiny_tokenizer
from rosa.runs import read_status, run_dir_for
from rosa.training import lifecycle
from tests.conftest import REPO
from tests.models.test_loss import Headless, batch_with_prompts

VIRTUAL = ["fnmodel.config.num_virtual_tokens=4"]
TYPES = {  # PEFT type -> the least config it needs on the tiny model (nothing: PEFT's defaults fit it)
    "LORA": [],
    "ADALORA": ["fnmodel.config.total_step=2"],
    "VERA": [],
    "IA3": [],
    "LOHA": [],
    "LOKR": [],
    "OFT": [],
    "BOFT": [],
    "HRA": [],
    "SHIRA": [],
    "HIRA": [],
    "SUPERTUNING": [],
    "PROMPT_TUNING": VIRTUAL,
    "PREFIX_TUNING": VIRTUAL,
    "P_TUNING": VIRTUAL,
    "CARTRIDGE": VIRTUAL,
}
PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment" / "baselines").glob("*.yaml"))
# SQL: short prompts and a scorer without start-up cost (E2E's METEOR starts Java); 2 beams, so that
# beam search runs on the 2 test rows (prompts of 239 and 237 tokens: left padded) in one batch.
# lr 1e-2: two steps move every adapter enough for the validation-loss check to see a wrong model.
TINY = [
    "dataset=sql",
    "threads=1",
    "dataset.sample_rows.train=8",
    "dataset.sample_rows.validation=2",
    "dataset.sample_rows.test=2",
    "dataset.max_length=256",
    "train.max_steps=2",
    "train.batch_size=2",
    "train.micro_batch_size=2",
    "train.lr=1e-2",
    "train.eval_batches=1",
    "train.eval_at_end=false",
    "train.sample_at_eval=false",
    "eval.limit=2",
    "eval.max_new_tokens=4",
    "eval.num_beams=2",
]
CASES = [pytest.param(t, ["fnmodel=peft", f"fnmodel.peft_type={t}", *extra], id=t) for t, extra in TYPES.items()] + [
    pytest.param(None, [f"+experiment=baselines/{p}"], id=f"baselines/{p}") for p in PRESETS
]


@pytest.mark.parametrize("peft_type, overrides", CASES)
def test_trains_and_evaluates_merged_where_mergeable(peft_type, overrides, tmp_path, monkeypatch, one_thread):
    from rosa.evaluation import runner

    if peft_type is not None:
        assert peft_type in peft.PeftType.__members__, f"{peft_type} is not a PeftType in peft {peft.__version__}"
    cfg = compose(rewrite_overrides([*overrides, *TINY, f"output.path={tmp_path}"]))
    run = validate(cfg)
    assert lifecycle.train(run, OmegaConf.to_yaml(cfg, resolve=True)) == 0
    run_dir = run_dir_for(run)
    assert math.isfinite(read_status(run_dir)["final_val_loss"])

    evaluated = []  # the model evaluation builds, kept for the check below
    monkeypatch.setattr(runner, "load_run", lambda *a, **kw: evaluated.append(load_run(*a, **kw)) or evaluated[-1])
    assert runner.evaluate_run(run_dir, split="test", progress=False)["state"] == "evaluated"
    record = json.loads((run_dir / "metrics-test.json").read_text())
    prompt_learning = run.fnmodel.peft_type in VIRTUAL_TOKEN_TYPES
    assert record["merged"] is not prompt_learning
    assert record["merge_note"] == ("method peft cannot be merged" if prompt_learning else "")
    assert record["n_examples"] == 2 and record["decoding"]["num_beams"] == 2
    assert record["metrics"] and all(math.isfinite(v) for v in record["metrics"].values())

    # the evaluated model (merged or not) is the trained one: it gets the final validation loss
    (loaded,) = evaluated
    examples, _ = load_examples(run.dataset, "validation")
    features, _ = build_train_features(
        examples, loaded.tokenizer, get_spec(run.dataset.name), run.dataset.max_length, run.train.loss_on
    )
    with torch.no_grad():
        loss, n = token_loss_sum(loaded.model, collate_batch(features, loaded.tokenizer.pad_token_id))
    assert float(loss) / n == pytest.approx(read_status(run_dir)["final_val_loss"], rel=1e-5)


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
    settings = dict(
        max_new_tokens=6,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
        output_logits=True,
        return_dict_in_generate=True,
    )
    for use_cache in (True, False):  # without a cache every step runs the whole sequence again
        out = model.generate(input_ids=ids, attention_mask=mask, use_cache=use_cache, **settings)
        torch.testing.assert_close(torch.stack(out.logits), expected, rtol=1e-4, atol=1e-4)

    # beam search as evaluation runs it (E2E's settings, 3 beams): a batch gives what each prompt alone gives
    beams = dict(max_new_tokens=6, num_beams=3, no_repeat_ngram_size=4, early_stopping=True)
    batched = generate(model, tokenizer, texts, batch_size=3, **beams).texts
    assert batched == [generate(model, tokenizer, [t], batch_size=1, **beams).texts[0] for t in texts]
    assert any(batched)


@pytest.mark.parametrize(
    "peft_type, config",
    [
        ("PROMPT_TUNING", {}),
        ("P_TUNING", {}),
        ("PREFIX_TUNING", {}),
        ("PREFIX_TUNING", {"prefix_projection": True}),
        ("CARTRIDGE", {}),
    ],
)
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
