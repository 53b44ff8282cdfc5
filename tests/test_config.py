"""Config validation: each kind of bad input stops with one line naming key, value and what is
allowed, exit status 2, before anything is loaded and without creating a run directory."""

import pytest

from rosa.command_line import check_command_line
from rosa.config import compose, rewrite_overrides, validate
from tests.conftest import run_train


def rejected(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(["train.py", *args])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train.lrr=1e-3"], "train.lrr: unknown key (did you mean 'lr'?)"),
        (["fnmodel.name=lorra"], "fnmodel.name='lorra' is unknown (did you mean 'lora'?); choose one of: "),
        (["fnmodel=lorra"], "fnmodel.name='lorra' is unknown"),
        (["dataset.name=gsm9k"], "dataset.name='gsm9k' is unknown (did you mean 'gsm8k'?); choose one of: "),
        (["train.lr=0"], "train.lr=0.0 is out of range; allowed: a number > 0"),
        (["train.lr=-1e-4"], "train.lr=-0.0001 is out of range"),
        (["fnmodel.rank=0"], "fnmodel.rank=0 is out of range; allowed: an integer >= 1"),
        (["fnmodel.dropout=1.0"], "fnmodel.dropout=1.0 is out of range; allowed: a number in [0, 1)"),
        (
            ["train.batch_size=8", "train.micro_batch_size=3"],
            "train.batch_size=8 is not a multiple of train.micro_batch_size=3",
        ),
        (["train.scheduler=step"], "train.scheduler='step' is not allowed; choose one of: linear, cosine, constant"),
        (["train.epochs=many"], "train.epochs='many' is not allowed; expected an integer"),
        (["dataset.source=local"], "dataset.path=None is not allowed with dataset.source=local"),
        (["dataset.source=web"], "dataset.source='web' is not allowed; choose one of: sample, local, hub"),
        (["precision=fp8"], "precision.name='fp8' is unknown"),
        (["-m", "train.lr=1e-3,-1"], "train.lr=-1.0 is out of range"),
        (
            ["train.eval_every=2", "train.keep_best=blue"],
            "train.keep_best='blue' is not allowed (did you mean 'bleu'?); choose one of: null, val_loss, bleu, nist",
        ),
        (  # the metrics are the dataset's own
            ["dataset=viggo", "train.eval_every=2", "train.keep_best=bleu"],
            "train.keep_best='bleu' is not allowed; choose one of: null, val_loss, exact_match, slot_precision",
        ),
        (
            ["train.keep_best=val_loss"],
            "train.keep_best needs validations during training, but train.eval_every=0; allowed: "
            "train.eval_every=N (steps) or train.eval_every=epoch",
        ),
        (
            ["train.early_stop={patience: 2, min_delta: 0.0}"],
            "train.early_stop needs validations during training, but train.eval_every=0",
        ),
        (
            ["train.eval_every=1", "train.early_stop={patience: 0, min_delta: 0.0}"],
            "train.early_stop.patience=0 is out of range; allowed: an integer >= 1",
        ),
        (
            ["train.eval_every=1", "train.early_stop={patience: 2, min_delta: -0.1}"],
            "train.early_stop.min_delta=-0.1 is out of range; allowed: a number >= 0",
        ),
        (["train.eval_every=1", "train.early_stop.patience=2"], "train.early_stop.min_delta: missing value"),
        (["train.eval_every=ep"], "train.eval_every='ep' is not allowed; allowed: an integer >= 0 (steps; 0: only"),
        (  # the masks are chosen during the run: a patience could end it in the warm-up
            ["fnmodel=rosa-robust", "train.eval_every=1", "train.early_stop={patience: 2, min_delta: 0.0}"],
            "train.early_stop is not allowed with fnmodel.mask_criterion=grad-fisher: its patience would count",
        ),
        (["tracker=mlfow"], "tracker.name='mlfow' is unknown (did you mean 'mlflow'?); choose one of: mlflow, "),
        (["tracker=wandb", "tracker.mode=onlin"], "tracker.mode='onlin' is not allowed (did you mean 'online'?)"),
        (["tracker=mlflow", "tracker.experimnt=x"], "tracker.experimnt: unknown key (did you mean 'experiment'?)"),
        (["tracker.dir=x"], "tracker.dir: unknown key; allowed keys under tracker: name"),
        (["-m", "train.lr=interval(1e-4,1e-2)"], "train.lr=interval(1e-4,1e-2): a sweep train.py cannot list"),
        (["-m", "hydra/sweeper=optuna", "train.lr=1e-3,1e-4"], "hydra/sweeper=optuna: Hydra sweepers are not used"),
        (["-m", "hydra.sweeper.n_trials=2"], "hydra.sweeper.n_trials=2: Hydra sweepers are not used"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, args, expected):
    assert expected in rejected(capsys, *args)


def test_unknown_names_list_every_choice(capsys):
    """The lists come from what exists (every registered method, every dataset module), not a copy."""
    from rosa.data import DATASETS
    from rosa.methods import METHODS

    listed = rejected(capsys, "fnmodel.name=lorra").split("choose one of: ")[1].split(" (aliases")[0].split(", ")
    assert listed == sorted(METHODS) and {"fft", "lora", "rosa-robust", "rosa-orthogonal", "spa"} <= set(listed)
    listed = rejected(capsys, "dataset.name=gsm9k").split("choose one of: ")[1].split(" (aliases")[0].split(", ")
    assert listed == sorted(DATASETS) and {"e2e", "eli5", "gsm8k", "sql", "viggo"} <= set(listed)


def test_both_spellings_select_the_same_choice_with_its_defaults():
    by_value = validate(compose(rewrite_overrides(["fnmodel.name=fft", "dataset.name=gsm8k"])))
    by_group = validate(compose(["fnmodel=fft", "dataset=gsm8k"]))
    assert by_value == by_group
    assert by_value.fnmodel.name == "fft" and not hasattr(by_value.fnmodel, "rank")
    assert by_value.dataset.max_length == 1024  # gsm8k.yaml's own default, not e2e's


@pytest.mark.parametrize("alias, group, canonical", [("none", "fnmodel", "fft"), ("e2e_nlg", "dataset", "e2e")])
def test_aliases(alias, group, canonical):
    assert rewrite_overrides([f"{group}.name={alias}"]) == [f"{group}={canonical}"]
    assert rewrite_overrides([f"{group}={alias}"]) == [f"{group}={canonical}"]


def test_sweeps_are_rewritten_elementwise():
    assert rewrite_overrides(["fnmodel.name=lora,none", "train.lr=1e-3"]) == ["fnmodel=lora,fft", "train.lr=1e-3"]


def test_default_is_the_embedded_setup():
    run = validate(compose([]))
    assert (run.model.name, run.dataset.name, run.dataset.source, run.fnmodel.name, run.precision.name) == (
        "tiny",
        "e2e",
        "sample",
        "lora",
        "auto",
    )


def test_subprocess_exit_2_and_no_run_directory(tmp_path):
    result = run_train("fnmodel.name=lorra", f"output.path={tmp_path / 'runs'}", timeout=120)
    assert result.returncode == 2
    assert "choose one of: " in result.stderr and "fft, lora" in result.stderr
    assert not (tmp_path / "runs").exists()
    result = run_train("train.lr=-1", f"output.path={tmp_path / 'runs'}", timeout=120)
    assert result.returncode == 2 and "train.lr=-1.0 is out of range" in result.stderr
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- issue 14: more bad input
@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["train.optimizer.betas=[a,b]"],
            "train.optimizer.betas=['a', 'b'] is not allowed; expected two numbers in [0, 1)",
        ),
        (
            ["train.lr=${nope.nope}"],
            "train.lr='${nope.nope}': the interpolation cannot be resolved (Interpolation key 'nope.nope' not found)",
        ),
        (["train.lr=${oc.env:NO_SUCH_VAR}"], "train.lr='${oc.env:NO_SUCH_VAR}': the interpolation cannot be resolved"),
        (
            ["train.lr=${train.lr}"],
            "train.lr='${train.lr}': the interpolation cannot be resolved (Recursive interpolation detected)",
        ),
        (["seed=-1"], "seed=-1 is out of range; allowed: an integer in [0, 4294967295]"),
        (["seed=4294967296"], "seed=4294967296 is out of range; allowed: an integer in [0, 4294967295]"),
        (["device=foo"], "device='foo' is not allowed; allowed: auto, cpu, cuda or cuda:N"),
        (
            ["fnmodel.target_modules=5"],
            "fnmodel.target_modules=5 is not allowed; allowed: 'all-linear', a non-empty list of module names or a regular expression",
        ),
        (
            ["fnmodel.target_modules=[]"],
            "fnmodel.target_modules=[] is not allowed; allowed: 'all-linear', a non-empty list",
        ),
        (
            ['fnmodel.target_modules="(["'],
            "fnmodel.target_modules='([' is not a valid regular expression (unterminated character set at position 1)",
        ),
        (
            ["fnmodel.target_modules=(["],
            "fnmodel.target_modules=([: not a valid override (extraneous input '(' expecting",
        ),
        (["-m", "fnmodel.target_modules=([", "seed=1,2"], "fnmodel.target_modules=([: not a valid override"),
        (
            ["dataset.sample_rows={train:"],
            "dataset.sample_rows={train:: not a valid override (no viable alternative at input",
        ),
        (
            ["fnmodel=rosa-orthogonal", "fnmodel.target_modules=[q_proj, 3]"],
            "fnmodel.target_modules=['q_proj', 3] is not allowed",
        ),
        (["dataset.sample_rows={train: -1}"], "dataset.sample_rows.train=-1 is out of range; allowed: an integer >= 1"),
        (
            ["dataset.sample_rows={bogus: 3}"],
            "dataset.sample_rows.bogus: unknown split; allowed split names: train, validation, test",
        ),
        (
            ["dataset.splits={bogus: test}"],
            "dataset.splits.bogus: unknown split; allowed split names: train, validation, test",
        ),
        (["dataset.splits={train: 5}"], "dataset.splits.train=5 is not allowed; allowed: a source split name"),
        (
            ["+experiment=does-not-exist"],
            "experiment: Could not find 'experiment/does-not-exist'; choose one of: baselines/dora",
        ),
        (
            ["fnmodel.density=0.1"],
            "fnmodel.density: unknown key; allowed keys under fnmodel: name, rank, alpha, dropout, rslora, target_modules",
        ),
        (
            ["fnmodel=rosa-robust", "fnmodel.densty=0.1"],
            "fnmodel.densty: unknown key (did you mean 'density'?); allowed keys under fnmodel: name, rank",
        ),
        (["train.lr=inf"], "train.lr=inf is not allowed; expected a finite number"),
        (["train.lr=1e400"], "train.lr=inf is not allowed; expected a finite number"),
        (["train.lr=nan"], "train.lr=nan is not allowed; expected a finite number"),
        (["fnmodel.alpha=inf"], "fnmodel.alpha=inf is not allowed; expected a finite number"),
        (["train.optimizer.eps=inf"], "train.optimizer.eps=inf is not allowed; expected a finite number"),
        (
            ["train.optimizer.weight_decay=inf"],
            "train.optimizer.weight_decay=inf is not allowed; expected a finite number",
        ),
        (
            ["train.optimizer.betas=[0.9,nan]"],
            "train.optimizer.betas=[0.9, nan] is not allowed; expected a finite number",
        ),
        (["train.max_grad_norm=nan"], "train.max_grad_norm=nan is not allowed"),
        (
            ["fnmodel=peft", "++fnmodel.config.lora_alpha=inf"],
            "fnmodel.config.lora_alpha=inf is not allowed; expected a finite number",
        ),
        (
            ["train.max_steps=1000000000000"],
            "train.max_steps=1000000000000 is out of range; allowed: an integer in [0, 1000000000]",
        ),
        (
            ["train.epochs=1000000000000"],
            "train.epochs=1000000000000 is out of range; allowed: an integer in [1, 1000000]",
        ),
        (
            ["output.name=../../../../escaped"],
            "output.name='../../../../escaped' is not allowed; allowed: a folder name without",
        ),
        (["output.name=/tmp/x"], "output.name='/tmp/x' is not allowed"),
        (["output.name=.."], "output.name='..' is not allowed"),
        (["-m", "train.lr=1e-3,-1", "seed=range(0,256)"], "train.lr=-1.0 is out of range"),
        (
            ["-m", "train.batch_size=8,6", "train.micro_batch_size=4,8", "seed=range(0,100)"],
            "train.batch_size=6 is not a multiple of train.micro_batch_size=4",
        ),
    ],
)
def test_more_bad_input_one_line_exit_2(capsys, args, expected):
    assert expected in rejected(capsys, *args)


@pytest.mark.parametrize(
    "args",
    [
        ["train.max_grad_norm=inf"],
        ["output.name=my-run.v2"],
        ["device=cuda:1"],
        ["fnmodel.target_modules=[q_proj,v_proj]"],
        ["fnmodel.target_modules=.*proj"],
        ["dataset.splits={train: test}"],
        ["seed=4294967295"],
        ["seed=0"],
    ],
)
def test_edge_values_still_allowed(args):
    validate(compose(args))


def test_split_names_match_the_data_layer():
    from rosa.config import SPLIT_NAMES
    from rosa.data.spec import CANONICAL_SPLITS

    assert SPLIT_NAMES == CANONICAL_SPLITS


def test_big_sweep_validates_every_combination_with_few_compositions(monkeypatch):
    """More than 256 combinations: one Hydra composition per group choice, every combination validated."""
    from rosa import config

    composed, validated = [], []
    real_compose, real_validate = config.compose, config.validate
    monkeypatch.setattr(config, "compose", lambda o: composed.append(o) or real_compose(o))
    monkeypatch.setattr(config, "validate", lambda c: validated.append(c) or real_validate(c))
    runs = config.compose_sweep(["fnmodel=lora,fft", "train.lr=1e-3,2e-3", "seed=range(0,150)"])
    assert len(composed) == 2 and len(validated) == len(runs) == 2 * 2 * 150
    assert [r for r, _ in runs[:2]] == validated[:2] and "seed: 1\n" in runs[1][1]  # each run and its config.yaml
    assert {(v.fnmodel.name, v.train.lr, v.seed) for v in validated} == {
        (m, lr, s) for m in ("lora", "fft") for lr in (1e-3, 2e-3) for s in range(150)
    }


# ----------------------------------------------------------------------------- run identity (issue 14)
import json  # noqa: E402
import re  # noqa: E402
from dataclasses import dataclass, field, fields  # noqa: E402
from pathlib import Path  # noqa: E402

from rosa.config import RunConfig  # noqa: E402
from rosa.methods import METHODS  # noqa: E402
from rosa.methods.lora import LoRAConfig  # noqa: E402
from rosa.runs import always_hashed_keys, run_hash  # noqa: E402
from rosa.schema import neutral  # noqa: E402


def test_the_always_hashed_keys_never_grow():
    """A new key cannot be added without deciding: NOT_IDENTITY, or its neutral value (rosa/runs.py's
    rule 2); the keys hashed always are the recorded ones (a new method records its own keys here)."""
    recorded = json.loads((Path(__file__).parent / "conf" / "identity_v1.json").read_text())
    assert always_hashed_keys([RunConfig, *(m.config_class for m in METHODS.values())]) == recorded


def test_an_undecided_new_key_is_reported():
    @dataclass
    class WithNewKey(LoRAConfig):
        new_knob: float = 1.0

    @dataclass
    class WithNeutralKey(LoRAConfig):
        new_knob: float = field(default=1.0, metadata=neutral(1.0))

    assert "WithNewKey.new_knob" in always_hashed_keys([WithNewKey])
    assert not [k for k in always_hashed_keys([WithNeutralKey]) if k.endswith("new_knob")]


def test_default_run_hashes_are_unchanged():
    """The folders of existing runs: these hashes must never change."""
    expected = {
        (): "44c3acea",
        ("fnmodel=fft",): "0ea194e9",
        ("fnmodel=rosa-robust",): "5f90db8f",
        ("fnmodel=rosa-orthogonal",): "6bcb0c28",
        ("fnmodel=spa",): "7a8163c4",
        ("fnmodel=peft",): "98e9667c",
        ("dataset=gsm8k",): "0504690e",
        ("+experiment=rosa-paper/gsm8k-bf16",): "d413d927",
        ("train.optimizer.name=sgd",): "bea745d1",
        ("model.chat_template=true",): "c33bcbab",
    }
    assert {k: run_hash(validate(compose(list(k)))) for k in expected} == expected


def test_a_key_added_at_its_neutral_value_keeps_every_identity():
    @dataclass
    class WithNewKey(LoRAConfig):
        new_knob: float = field(default=1.0, metadata=neutral(1.0))

    run = validate(compose([]))
    old = run_hash(run)
    run.fnmodel = WithNewKey(**vars(run.fnmodel))
    assert run_hash(run) == old
    run.fnmodel.new_knob = 2.0
    assert run_hash(run) != old


def test_a_config_yaml_from_before_the_best_adapter_keys_still_validates():
    """A run folder's config.yaml written before train.keep_best, eval_limit and early_stop (eval.py and
    a resume read it again): the missing keys take their neutral values, and its hash is unchanged."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(compose([]))
    for key in ("keep_best", "eval_limit", "early_stop"):
        del data["train"][key]
    old = validate(data)
    assert (old.train.keep_best, old.train.eval_limit, old.train.early_stop) == (None, None, None)
    assert run_hash(old) == run_hash(validate(compose([])))


def test_training_settings_change_the_identity_and_the_rest_does_not():
    base = run_hash(validate(compose([])))
    changes = [
        ["train.lr=1e-3"],
        ["seed=1"],
        ["fnmodel.rank=4"],
        ["train.loss_norm=examples"],
        ["dataset.limit=5"],
        ["train.optimizer.momentum=0.5", "train.optimizer.name=sgd"],
        ["precision=bf16"],
        ["train.max_steps=3"],
        ["train.early_stop={patience: 2, min_delta: 0.0}", "train.eval_every=5"],  # how long it trains
    ]
    hashes = {run_hash(validate(compose(c))) for c in changes}
    assert base not in hashes and len(hashes) == len(changes)
    for same in (
        ["threads=1"],
        ["train.eval_every=5"],
        ["output.name=x"],
        ["eval.limit=3"],
        ["device=cpu"],
        ["train.checkpoint_every=7"],
        ["train.eval_every=epoch", "train.keep_best=val_loss", "train.eval_limit=3"],  # what is kept beside it
        ["tracker=mlflow"],
        ["tracker=wandb", "tracker.project=x"],
    ):
        assert run_hash(validate(compose(same))) == base, same


def test_a_run_from_before_trackers_validates_as_tensorboard():
    from omegaconf import OmegaConf

    old = OmegaConf.to_container(compose([]), resolve=True)
    del old["tracker"]  # a config.yaml written before the key
    run = validate(old)
    assert run.tracker.name == "tensorboard" and run_hash(run) == run_hash(validate(compose([])))


def test_nan_and_inf_are_refused_for_every_float_key():
    """Generic: every float field of every schema (each method's too) refuses nan and -inf."""
    from typing import Optional, get_type_hints

    from omegaconf import OmegaConf

    from rosa.config import ConfigError, RunConfig
    from rosa.methods import METHODS

    def float_keys(schema, prefix):
        hints = get_type_hints(schema)
        for f in fields(schema):
            typ = hints[f.name]
            if hasattr(typ, "__dataclass_fields__"):
                yield from float_keys(typ, f"{prefix}{f.name}.")
            elif typ in (float, Optional[float]):
                yield f"{prefix}{f.name}"

    checked = 0
    for method in sorted(METHODS):  # every registered method (peft's floats sit in a free mapping, checked too)
        base = OmegaConf.to_container(compose([f"fnmodel={method}"]))
        keys = list(float_keys(RunConfig, "")) + list(float_keys(METHODS[method].config_class, "fnmodel."))
        for key in keys:
            for bad in (float("nan"), float("-inf")):
                data = OmegaConf.create(base)
                OmegaConf.update(data, key, bad)
                with pytest.raises(
                    ConfigError, match=f"^{re.escape(key)}=(nan|-inf) is not allowed; expected a finite"
                ):
                    validate(data)
                checked += 1
    assert checked >= 40


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["-m", "hydra/launcher=slurmm"],
            "hydra/launcher='slurmm' is unknown (did you mean 'slurm'?); choose one of: local, slurm",
        ),
        (
            ["-m", "hydra/launcher=slurm", "hydra.launcher.partitio=gpu"],
            "hydra.launcher.partitio: unknown key (did you mean 'partition'?); allowed keys under hydra.launcher:",
        ),
        (
            ["-m", "hydra.launcher.partition=gpu"],
            "hydra.launcher.partition: no launcher selected; add hydra/launcher=slurm",
        ),
    ],
)
def test_bad_launcher_overrides_one_line_exit_2(capsys, args, expected):
    assert expected in rejected(capsys, *args)


def test_good_launcher_overrides_pass_the_check():
    command_line = check_command_line(
        [
            "train.py",
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.timeout_min=30",
            "seed=1,2",
        ]
    )
    launcher = command_line.launcher
    assert [run.seed for run, _ in command_line.runs] == [1, 2] and not command_line.hydra_flags
    assert (launcher.name, launcher.cluster) == ("slurm", "slurm")
    assert launcher.params["partition"] == "gpu" and launcher.params["timeout_min"] == 30
    assert launcher.params["submitit_folder"] == f"{launcher.folder}/.submitit/%j"
