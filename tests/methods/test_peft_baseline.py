"""fnmodel=peft: any HF PEFT method in our loop. Bad input is one line before anything loads; a DoRA
run trains, resumes after a kill with identical losses, exports in PEFT's format (same logits as our
merged model), and appears in the result tables under its PEFT name with its trainable count."""

from __future__ import annotations

import json

import pytest
import torch

from rosa.config import ConfigError, compose, rewrite_overrides, validate
from rosa.training import lifecycle, loop

DORA = [
    "fnmodel=peft",
    "fnmodel.peft_type=LORA",
    "fnmodel.config.use_dora=true",
    "fnmodel.config.r=4",
    "fnmodel.config.target_modules=all-linear",
]
SMALL = [
    "train.max_steps=6",
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "train.checkpoint_every=2",
    "dataset.sample_rows.train=24",
    "dataset.sample_rows.validation=4",
    "train.eval_at_end=false",
    "train.sample_at_eval=false",
    "threads=1",
]


def run_config(*overrides):
    return validate(compose(rewrite_overrides(list(overrides))))


def train(*overrides) -> int:
    """lifecycle.train as train.py calls it, with the composed config saved as the run's config.yaml."""
    from omegaconf import OmegaConf

    cfg = compose(rewrite_overrides(list(overrides)))
    return lifecycle.train(validate(cfg), OmegaConf.to_yaml(cfg, resolve=True))


@pytest.mark.parametrize(
    "override, message",
    [
        ("fnmodel.peft_type=LORRA", "fnmodel.peft_type='LORRA' is unknown (did you mean 'LORA'?); choose one of: "),
        ("fnmodel.config.rr=4", "fnmodel.config.rr: unknown key for LORA (did you mean 'r'?); allowed keys: "),
        ("fnmodel.config.r=-3", "fnmodel.config.r=-3 is out of range; allowed: an integer >= 1"),
        (
            "fnmodel.peft_type=CPT",
            "fnmodel.peft_type='CPT' is not supported: its loss is computed inside PEFT's "
            "forward from labels, which our loop does not pass; allowed prompt-learning types: "
            "PROMPT_TUNING, ",
        ),
        (
            "fnmodel.peft_type=MULTITASK_PROMPT_TUNING",
            "fnmodel.peft_type='MULTITASK_PROMPT_TUNING' is not supported: it needs a task id per example",
        ),
    ],
)
def test_bad_peft_input_is_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        run_config("fnmodel=peft", override)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


class Killed(BaseException):
    """Like SIGKILL: not an Exception, so the run is not marked failed and nothing is cleaned up."""


def history(run_dir):
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    return [
        h["loss"] for h in json.loads((run_dir / "checkpoints" / latest["path"] / "state.json").read_text())["history"]
    ]


def test_dora_trains_resumes_exactly_exports_and_is_tabled(tmp_path, monkeypatch, one_thread):
    from peft import PeftModel

    from rosa.evaluation.load import load_run
    from rosa.models import load_model, load_tokenizer
    from rosa.results.compile import build_tables
    from rosa.runs import run_dir_for

    straight = run_config(*DORA, *SMALL, f"output.path={tmp_path}/straight")
    assert train(*DORA, *SMALL, f"output.path={tmp_path}/straight") == 0
    straight_dir = run_dir_for(straight)

    killed_args = [*DORA, *SMALL, f"output.path={tmp_path}/killed"]
    killed = run_config(*killed_args)
    real_step, calls = loop.Trainer.train_step, {"n": 0}

    def dies_in_step_5(self):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Killed
        return real_step(self)

    monkeypatch.setattr(loop.Trainer, "train_step", dies_in_step_5)
    with pytest.raises(Killed):
        train(*killed_args)
    monkeypatch.setattr(loop.Trainer, "train_step", real_step)
    killed_dir = run_dir_for(killed)
    assert json.loads((killed_dir / "checkpoints" / "latest.json").read_text())["step"] == 4
    assert train(*killed_args) == 0
    assert len(history(killed_dir)) == 6 and history(killed_dir) == history(straight_dir)

    # PEFT loads our export and computes what our merged model computes
    loaded = load_run(straight_dir)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    ours = loaded.model(input_ids=ids).logits
    tokenizer = load_tokenizer(straight.model)
    theirs = PeftModel.from_pretrained(
        load_model(straight.model, tokenizer), straight_dir / "adapter", is_trainable=True
    )
    torch.testing.assert_close(theirs(input_ids=ids).logits, ours, rtol=1e-4, atol=1e-5)
    assert loaded.merged

    from rosa.evaluation.runner import evaluate_run

    assert evaluate_run(straight_dir, split="test", limit=2, progress=False)["state"] == "evaluated"
    (table,), _ = build_tables(tmp_path / "straight", split="test")
    (row,) = table.raw
    assert row["method"] == "peft:lora target_modules=all-linear use_dora=True" and row["rank"] == 4
    assert row["trainable_params"] == theirs.get_nb_trainable_parameters()[0] > 0


def test_adalora_allocates_ranks_between_backward_and_step_and_resumes_in_its_final_phase(
    tmp_path, monkeypatch, one_thread
):
    """Steps 0-1 allocate, step 2 fixes the rank pattern, step 3 masks with it: a run killed before step 3
    resumes from its checkpoint (every rank kept, the pattern in the extra state) with the same losses."""
    from rosa.runs import run_dir_for

    args = [
        "fnmodel=peft",
        "fnmodel.peft_type=ADALORA",
        "fnmodel.config.total_step=4",
        "fnmodel.config.init_r=4",
        "fnmodel.config.target_r=2",
        "fnmodel.config.tinit=1",
        "fnmodel.config.tfinal=2",
        "fnmodel.config.deltaT=1",
        *SMALL[1:],
        "train.max_steps=4",
        "train.checkpoint_every=3",
        "dataset=sql",
        "train.batch_size=2",
        "dataset.sample_rows.train=8",
        "train.eval_batches=1",
    ]
    straight = [*args, f"output.path={tmp_path}/straight"]
    assert train(*straight) == 0
    straight_dir = run_dir_for(run_config(*straight))
    config = json.loads((straight_dir / "adapter" / "adapter_config.json").read_text())
    assert config["rank_pattern"], "update_and_allocate never ran: no rank was re-allocated"

    killed = [*args, f"output.path={tmp_path}/killed"]
    real_step = loop.Trainer.train_step

    def dies_in_step_4(self):
        if self.step == 3:
            raise Killed
        return real_step(self)

    monkeypatch.setattr(loop.Trainer, "train_step", dies_in_step_4)
    with pytest.raises(Killed):
        train(*killed)
    monkeypatch.setattr(loop.Trainer, "train_step", real_step)
    assert train(*killed) == 0
    killed_dir = run_dir_for(run_config(*killed))
    assert len(history(killed_dir)) == 4 and history(killed_dir) == history(straight_dir)
