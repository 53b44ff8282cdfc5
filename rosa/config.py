"""A run's configuration: Hydra composes ``conf/``, this module checks the result.

One source per default: the YAML files of ``conf/`` (groups model, dataset, fnmodel, precision,
tracker, experiment) hold every default value, each with its comment. The dataclasses below, and each method's
own next to its code (``rosa/methods/<name>.py``), hold each key's type, allowed range and run-identity
class (``rosa/runs.py``), no values. :func:`validate` merges a composed config into them as
OmegaConf structured configs (OmegaConf checks keys and types), checks each field's allowed values,
and raises :class:`ConfigError` for anything bad, whose message is one line naming the key, the bad
value and what is allowed; ``train.py`` prints it and exits with status 2 before anything is loaded
or created.

A key's path: ``conf/<group>/<choice>.yaml`` -> :func:`compose` -> :func:`validate` -> the dataclass
field -> the code that reads it (docs/architecture.md traces ``fnmodel.rank`` and ``train.lr``).

Two spellings select a group: ``fnmodel=lora`` (Hydra's) and ``fnmodel.name=lora`` (the ROSA code
base's); :func:`rewrite_overrides` turns the second into the first before Hydra sees the command
line. Aliases: a method's (its ``@register(..., aliases=)``: e.g. the ROSA paper's name for
rosa-orthogonal), and ``e2e_nlg`` -> ``e2e``.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, get_type_hints

from rosa.data.features import MIN_MAX_LENGTH
from rosa.methods import METHODS
from rosa.methods.base import method_aliases
from rosa.schema import (
    NOT_IDENTITY,
    ConfigError,
    at_least_1,
    check,
    did_you_mean,
    int_range,
    neutral,
    non_negative,
    one_of,
    positive,
    validator,
)

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUP_KEYS = ("fnmodel", "dataset", "precision", "tracker")  # `<group>.name=X` selects group X
FREE_MAPPINGS = tuple(
    f"fnmodel.{key}."
    for method in METHODS.values()  # keys Hydra may add below a method's
    for key in getattr(method.config_class, "FREE_MAPPINGS", ())
)  # free mapping (PEFT's)
ALIASES = {"fnmodel": method_aliases(), "dataset": {"e2e_nlg": "e2e"}}
SPLIT_NAMES = ("train", "validation", "test")  # rosa.data.spec.CANONICAL_SPLITS
MAX_STEPS, MAX_EPOCHS = 10**9, 10**6  # ~30 years at a step per second: anything above is a typo
MAX_SWEEP = 100_000  # combinations one command may launch

__all__ = [
    "ConfigError",
    "RunConfig",
    "compose",
    "compose_run",
    "compose_sweep",
    "validate",
    "rewrite_overrides",
    "CONF_DIR",
]


def _split_map(allowed: str, value_ok, problem: str = "is not allowed") -> dict:
    def check_map(value: dict, key: str) -> None:
        for split, item in value.items():
            if split not in SPLIT_NAMES:
                raise ConfigError(_unknown_split(f"{key}.{split}"))
            if not value_ok(item):
                raise ConfigError(f"{key}.{split}={item!r} {problem}; allowed: {allowed}")

    return validator(check_map)


def _unknown_split(key: str) -> str:
    return f"{key}: unknown split; allowed split names: {', '.join(SPLIT_NAMES)}"


# ----------------------------------------------------------------------------- schema (values: conf/)
@dataclass(kw_only=True)
class ModelConfig:
    name: str
    revision: Optional[str]
    trust_remote_code: bool
    cache: Optional[str]
    gradient_checkpointing: bool
    chat_template: bool = field(metadata=neutral(False))


@dataclass(kw_only=True)
class DatasetConfig:
    name: str
    source: str = field(metadata=one_of("sample", "local", "hub"))
    path: Optional[str]
    cache: Optional[str]
    splits: dict = field(
        metadata=_split_map(
            "a source split name, a file name or carve:<source split>", lambda v: isinstance(v, str) and v.strip()
        )
    )
    max_length: int = field(metadata=check(lambda v: v >= MIN_MAX_LENGTH, f"an integer >= {MIN_MAX_LENGTH}"))
    sample_rows: dict = field(
        metadata=_split_map(
            "an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "is out of range"
        )
    )
    sample_seed: int
    limit: Optional[int] = field(metadata=at_least_1)


@dataclass(kw_only=True)
class PrecisionConfig:
    name: str = field(metadata=one_of("auto", "fp32", "bf16", "fp16", "nf4"))
    base_dtype: str = field(metadata=one_of("auto", "fp32", "bf16", "fp16"))
    param_dtype: str = field(metadata=one_of("fp32", "bf16"))
    autocast: str = field(metadata=one_of("auto", "none", "bf16", "fp16"))


@dataclass(kw_only=True)
class OptimizerConfig:
    name: str = field(metadata={**one_of("adamw", "sgd"), **neutral("adamw")})
    betas: list
    eps: float = field(metadata=positive)
    weight_decay: float = field(metadata=non_negative)
    momentum: float = field(metadata={**non_negative, **neutral(0.0)})


def _eval_period_ok(value: Any) -> bool:
    return value == "epoch" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


@dataclass(kw_only=True)
class EarlyStopConfig:
    patience: int = field(metadata=at_least_1)  # evaluations without an improvement before the run stops
    min_delta: float = field(metadata=non_negative)  # the least change that counts as an improvement


@dataclass(kw_only=True)
class TrainConfig:
    epochs: int = field(metadata=int_range(1, MAX_EPOCHS))
    max_steps: Optional[int] = field(metadata=int_range(0, MAX_STEPS))
    batch_size: int = field(metadata=at_least_1)
    micro_batch_size: int = field(metadata=at_least_1)
    lr: float = field(metadata=positive)
    optimizer: OptimizerConfig
    scheduler: str = field(metadata=one_of("linear", "cosine", "constant"))
    warmup_steps: int = field(metadata=non_negative)
    max_grad_norm: Optional[float] = field(metadata={**positive, "allow_inf": True})
    loss_on: str = field(metadata=one_of("target", "all"))
    loss_norm: str = field(metadata={**one_of("tokens", "examples"), **neutral("tokens")})
    # shared_prefix: how the same loss is computed (to float rounding, as threads and device), not what
    # is trained; docs/shared-prefix.md measures its one difference, adapter dropout on the prefix
    shared_prefix: str = field(metadata={**one_of("auto", "off"), **NOT_IDENTITY})
    eval_every: Any = field(
        metadata={**check(_eval_period_ok, "an integer >= 0 (steps; 0: only at the end) or 'epoch'"), **NOT_IDENTITY}
    )
    eval_batches: Optional[int] = field(metadata={**at_least_1, **NOT_IDENTITY})
    checkpoint_every: int = field(metadata={**at_least_1, **NOT_IDENTITY})
    log_every: int = field(metadata={**at_least_1, **NOT_IDENTITY})
    eval_at_end: bool = field(metadata=NOT_IDENTITY)
    sample_at_eval: bool = field(metadata=NOT_IDENTITY)
    # The best adapter and early stopping (rosa/training/selection.py). keep_best and eval_limit choose
    # what is kept beside the final adapter, not what is trained. early_stop decides how long the run
    # trains, so its final adapter: it is in the identity (a run that may stop early has its own folder,
    # never reported done in place of the full run); null, the default, keeps every existing hash.
    keep_best: Optional[str] = field(metadata={**NOT_IDENTITY, **neutral(None)})  # checked in _check_cross_field
    eval_limit: Optional[int] = field(metadata={**at_least_1, **NOT_IDENTITY, **neutral(None)})
    early_stop: Optional[EarlyStopConfig] = field(metadata=neutral(None))


@dataclass(kw_only=True)
class EvalConfig:
    split: str = field(metadata=one_of("validation", "test"))
    batch_size: int = field(metadata=at_least_1)
    limit: Optional[int] = field(metadata=at_least_1)
    max_new_tokens: Optional[int] = field(metadata=at_least_1)
    num_beams: Optional[int] = field(metadata=at_least_1)
    merge: bool
    # lm-evaluation-harness tasks run after training (rosa/evaluation/lm_eval.py); the names are
    # checked as the run is built. Added after runs existed: their config.yaml lacks them
    lm_eval: Optional[list[str]] = field(
        metadata={
            **check(lambda v: v and all(n.strip() for n in v), "a non-empty list of task names, e.g. [gsm8k_local]"),
            **neutral(None),
        }
    )
    lm_eval_limit: Optional[int] = field(metadata={**at_least_1, **neutral(None)})


@dataclass(kw_only=True)
class OutputConfig:
    path: str
    name: Optional[str] = field(
        metadata=check(  # replaces the readable part of the run folder's name
            lambda v: v and not re.search(r"[/\\\0]", v) and not v.startswith((".", "~")),
            "a folder name without '/', '\\' or a leading '.' or '~' (runs stay inside output.path)",
        )
    )


def _non_empty(what: str) -> dict:
    return check(lambda v: v.strip() != "", what)


@dataclass(kw_only=True)
class TensorBoardConfig:  # TensorBoard only (every tracker writes its event files: rosa/tracking)
    name: str


@dataclass(kw_only=True)
class MlflowConfig:
    name: str
    tracking_uri: str = field(metadata=_non_empty("a folder (MLflow's file store) or an MLflow tracking URI"))
    experiment: str = field(metadata=_non_empty("an MLflow experiment name"))


@dataclass(kw_only=True)
class WandbConfig:
    name: str
    project: str = field(metadata=_non_empty("a W&B project name"))
    dir: Optional[str]
    mode: str = field(metadata=one_of("offline", "online"))


TRACKERS = {"tensorboard": TensorBoardConfig, "mlflow": MlflowConfig, "wandb": WandbConfig}  # conf/tracker/


@dataclass(kw_only=True)
class RunConfig:
    model: ModelConfig
    dataset: DatasetConfig
    fnmodel: Any  # the config class of the method named by fnmodel.name
    precision: PrecisionConfig
    train: TrainConfig
    eval: EvalConfig = field(metadata=NOT_IDENTITY)
    output: OutputConfig = field(metadata=NOT_IDENTITY)
    seed: int = field(metadata=int_range(0, 2**32 - 1))  # numpy's seed range
    device: str = field(
        metadata={
            **check(lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v), "auto, cpu, cuda or cuda:N"),
            **NOT_IDENTITY,
        }
    )
    threads: Optional[int] = field(metadata={**at_least_1, **NOT_IDENTITY})
    experiment: Optional[str] = field(metadata=NOT_IDENTITY)
    # the config class of the tracker named by tracker.name; a run from before trackers used TensorBoard
    tracker: Any = field(metadata={**NOT_IDENTITY, **neutral({"name": "tensorboard"})})


# ----------------------------------------------------------------------------- command line
def group_choices(group: str) -> list[str]:
    """The options of a config group, sub-folders included (``experiment``: ``rosa-paper/gsm8k-bf16``)."""
    folder = CONF_DIR / group
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


def resolve_choice(group: str, value: str) -> str:
    """Map an alias to its canonical name; raise a one-line error for an unknown name."""
    aliases = ALIASES.get(group, {})
    canonical, choices = aliases.get(value, value), group_choices(group)
    if canonical not in choices:
        listed = ", ".join(f"{a} -> {c}" for a, c in aliases.items())
        raise ConfigError(
            f"{group}.name={value!r} is unknown{did_you_mean(value, choices + list(aliases))}; "
            f"choose one of: {', '.join(choices)}" + (f" (aliases: {listed})" if listed else "")
        )
    return canonical


def rewrite_overrides(overrides: list[str]) -> list[str]:
    """``fnmodel.name=X`` -> ``fnmodel=X`` (likewise dataset, precision), aliases resolved and names
    checked in both spellings, sweeps (``fnmodel.name=lora,rosa``) element-wise; a free-mapping key
    (``fnmodel.config.r=8``) gets Hydra's ``++`` (add or override)."""
    out = []
    for arg in overrides:
        key, eq, value = arg.partition("=")
        bare = key.lstrip("+~")
        group = bare.removesuffix(".name")
        if eq and key.startswith(FREE_MAPPINGS):
            out.append(f"++{arg}")
        elif eq and group in GROUP_KEYS and bare in (group, f"{group}.name"):
            out.append(f"{group}={','.join(resolve_choice(group, v.strip()) for v in value.split(','))}")
        else:
            out.append(arg)
    return out


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of a command line; an override its grammar refuses is a one-line ConfigError."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        reason = " ".join(
            l for l in str(err).splitlines() if l.strip() and not l.startswith(("See https:", "Error parsing"))
        )
        raise ConfigError(
            f"{getattr(err, 'override', None) or 'an override'}: not a valid override "
            f"({' '.join(reason.split())}); "
            "allowed: Hydra's override grammar; quote a value holding brackets or other special "
            "characters, e.g. 'key=\"value\"'"
        ) from None


def compose(overrides: list[str]):
    """Compose ``conf/`` with Hydra's compose API (``hydra.*`` overrides are the launcher's).

    Plain keys go in as ``++key=value`` (add or override), so a typo'd key reaches :func:`validate`,
    which names it with a did-you-mean against the schema of the chosen method; a group choice that
    does not exist (``model=gpt9``, ``+experiment=nope``) is named here, before Hydra composes."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    job = []
    for override in parse_overrides([o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]):
        key = override.get_key_element().lstrip("+~")
        if _is_group(key):
            choices = group_choices(key.split("@")[0])
            values = override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]
            missing = next((v for v in map(str, values) if v not in choices), None)
            if missing is not None:
                raise ConfigError(f"{key}: Could not find {f'{key}/{missing}'!r}; choose one of: {', '.join(choices)}")
            job.append(override.input_line)
        else:
            job.append(override.input_line if override.input_line[0] in "+~" else f"++{override.input_line}")
    try:  # the context restores Hydra's global state when it ends
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=job)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError("config error: " + " ".join(str(err).split())) from None


def _is_group(key: str) -> bool:
    """Whether an override key selects a config group option (``fnmodel``, ``+experiment``)."""
    return (CONF_DIR / key.lstrip("+~").split("@")[0]).is_dir()


def expand_sweeps(overrides: list[str], limit: int = 256) -> list[list[str]]:
    """Every combination of a multirun command line (at most ``limit``)."""
    options = [
        [f"{o.get_key_element()}={v}" for v in _sweep_values(o)] if o.is_sweep_override() else [o.input_line]
        for o in parse_overrides(overrides)
    ]
    return [list(c) for c in itertools.islice(itertools.product(*options), limit)]


def _sweep_values(override) -> list[str]:
    """The values of a sweep override; one line for one that cannot be listed (``interval(...)``: a
    search space for a Hydra sweeper such as Optuna's, which ``train.py -m`` does not run)."""
    from hydra.errors import HydraException

    try:
        return list(override.sweep_string_iterator())
    except HydraException:
        raise ConfigError(
            f"{override.input_line}: a sweep train.py cannot list; allowed: a comma list, range(...) or "
            "choice(...) (train.py -m trains every combination itself: no Hydra sweeper, Optuna's included)"
        ) from None


def compose_sweep(overrides: list[str], limit: int = 256) -> list[tuple[RunConfig, str]]:
    """Every combination of a command line (one for a single run), composed and validated once, with
    the config.yaml it trains with; ConfigError (one line) for the first bad one, before any launches.

    Up to ``limit`` combinations each is composed. A bigger sweep composes once per combination of its
    *group* choices (they change defaults) and sets each combination of the plain values
    (``seed=range(0,1000)``) into a copy of that config. More than ``MAX_SWEEP`` are refused."""
    from omegaconf import OmegaConf

    combos = expand_sweeps(overrides, limit=limit + 1)
    if len(combos) <= limit:
        return [compose_run(combo) for combo in combos]
    parsed = parse_overrides(overrides)
    total = math.prod(len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in parsed)
    if total > MAX_SWEEP:
        raise ConfigError(
            f"the sweep has {total} combinations; allowed: at most {MAX_SWEEP} per command "
            "(split it into several commands)"
        )
    is_group = [_is_group(o.get_key_element()) for o in parsed]
    groups = [o for o, g in zip(parsed, is_group) if not o.is_sweep_override() or g]
    values = [o for o, g in zip(parsed, is_group) if o.is_sweep_override() and not g]
    runs = []
    for group_combo in expand_sweeps([o.input_line for o in groups], limit=MAX_SWEEP):
        firsts = [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" for o in values]
        base = OmegaConf.to_container(compose(group_combo + firsts), resolve=False)
        for combo in itertools.product(*(list(o.sweep_iterator()) for o in values)):
            data = json.loads(json.dumps(base))
            for override, value in zip(values, combo):
                *parents, leaf = override.get_key_element().lstrip("+~").split(".")
                node = data
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
            runs.append(validated_run(OmegaConf.create(data)))
    return runs


def compose_run(overrides: list[str]) -> tuple[RunConfig, str]:
    """One run's command line, composed and validated, with the config.yaml it trains with."""
    return validated_run(compose(overrides))


def validated_run(cfg) -> tuple[RunConfig, str]:
    """A composed config, validated, with its config.yaml."""
    from omegaconf import OmegaConf

    run = validate(cfg)  # first: an unresolvable interpolation is a one-line error there
    return run, OmegaConf.to_yaml(cfg, resolve=True)


# ----------------------------------------------------------------------------- validation
def validate(cfg) -> RunConfig:
    """Check a composed config (DictConfig or dict) against the schema; return it as dataclasses."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    except OmegaConfBaseException as err:  # ${nope.nope}, ${oc.env:UNSET}, a loop of interpolations
        key = getattr(err, "full_key", None) or "config"
        raw: Any = OmegaConf.to_container(cfg, resolve=False)
        for part in key.split("."):
            raw = raw.get(part) if isinstance(raw, dict) else None
        raise ConfigError(
            f"{key}={raw!r}: the interpolation cannot be resolved ({str(err).strip().splitlines()[0]}); "
            "allowed: a value, or ${...} naming an existing key or a set environment variable"
        ) from None
    data.pop("hydra", None)
    _fill_neutral(RunConfig, data, data)
    schema = OmegaConf.structured(RunConfig)
    for name in CHOSEN_SECTIONS:
        schema[name] = OmegaConf.structured(_chosen_schema(data, name))
    try:  # OmegaConf types it: unknown keys, missing values, types; then each field's allowed values
        run = OmegaConf.to_object(OmegaConf.merge(schema, data))
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err, data)) from None
    _check_values(run)
    _check_cross_field(run)
    return run


CHOSEN_SECTIONS = ("fnmodel", "tracker")  # RunConfig's sections whose config class their ``name`` chooses


def _chosen_schema(data: dict, section: str) -> type:
    """The config class that ``<section>.name`` chooses in the composed ``data`` (the method's, the tracker's)."""
    classes = TRACKERS if section == "tracker" else {name: method.config_class for name, method in METHODS.items()}
    name = (data.get(section) or {}).get("name")
    if name not in classes:
        raise ConfigError(f"{section}.name={name!r} is unknown; choose one of: {', '.join(sorted(classes))}")
    return classes[name]


def _field_type(schema: type, name: str, data: dict):
    """The type of ``schema``'s field ``name``; a chosen section of RunConfig (``fnmodel``, ``tracker``)
    is the config class its name chooses in ``data``."""
    return (
        _chosen_schema(data, name) if schema is RunConfig and name in CHOSEN_SECTIONS else get_type_hints(schema)[name]
    )


def _fill_neutral(schema: type, data: dict, root: dict) -> None:
    """A key added after runs existed is missing from their config.yaml: its neutral value (rosa.schema)."""
    for f in fields(schema):
        if f.name not in data and "neutral" in f.metadata:
            data[f.name] = copy.deepcopy(f.metadata["neutral"])
        section = _field_type(schema, f.name, root)
        if isinstance(data.get(f.name), dict) and hasattr(section, "__dataclass_fields__"):
            _fill_neutral(section, data[f.name], root)


_EXPECTED = {  # OmegaConf's words for a value of the wrong type -> ours
    "to Integer": "an integer",
    "to Float": "a number",
    "to Boolean": "true or false",
    "ListConfig": "a list",
    "Dict[": "a dict",
    "is not a subclass of": "a mapping",
}


def _one_line(err, data: dict) -> str:
    """An OmegaConf error as our one line: the key, the bad value and what is allowed."""
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue

    key = err.full_key or "config"
    parent, _, leaf = key.rpartition(".")
    if isinstance(err, ConfigKeyError):
        section = RunConfig
        for part in filter(None, parent.split(".")):
            section = _field_type(section, part, data)
        known = [f.name for f in fields(section)]
        return (
            f"{key}: unknown key{did_you_mean(leaf, known)}; allowed keys"
            f"{f' under {parent}' if parent else ''}: {', '.join(known)}"
        )
    if isinstance(err, MissingMandatoryValue):
        return f"{key}: missing value"
    expected = next((text for words, text in _EXPECTED.items() if words in str(err)), None)
    if expected is None:
        return f"{key}: {str(err).splitlines()[0]}"
    return f"{key}={err.value!r} is not allowed; expected {expected}"


def _check_values(section, prefix: str = "") -> None:
    """Each field's allowed values (its metadata: choices, ranges, validators) and finite floats."""
    for f in fields(section):
        key, meta, value = prefix + f.name, f.metadata, getattr(section, f.name)
        if hasattr(value, "__dataclass_fields__"):
            _check_values(value, key + ".")
            continue
        if not (meta.get("allow_inf") and value == math.inf):
            _reject_non_finite(value, key)
        if value is None:
            continue
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(
                f"{key}={value!r} is not allowed{did_you_mean(value, meta['choices'])}; "
                f"choose one of: {', '.join(map(str, meta['choices']))}"
            )
        if "check" in meta and not meta["check"](value):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            raise ConfigError(
                f"{key}={value!r} is {'out of range' if number else 'not allowed'}; allowed: {meta['allowed']}"
            )
        if "validate" in meta:
            meta["validate"](value, key)


def _reject_non_finite(value, key: str, shown=None) -> None:
    """Raise for an inf or nan float in ``value`` (a list is shown whole; a mapping names the key):
    inf and nan train nothing useful and fail late."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value if shown is None else shown!r} is not allowed; expected a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_non_finite(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _reject_non_finite(v, key, value if shown is None else shown)


def _check_cross_field(run: RunConfig) -> None:
    t = run.train
    if t.batch_size % t.micro_batch_size:
        raise ConfigError(
            f"train.batch_size={t.batch_size} is not a multiple of train.micro_batch_size="
            f"{t.micro_batch_size}; allowed: batch sizes that micro_batch_size divides"
        )
    betas = t.optimizer.betas
    if len(betas) != 2 or not all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas
    ):
        raise ConfigError(f"train.optimizer.betas={betas!r} is not allowed; expected two numbers in [0, 1)")
    if run.dataset.source == "local" and not run.dataset.path:
        raise ConfigError(
            "dataset.path=None is not allowed with dataset.source=local; "
            "set dataset.path to the folder holding the original release files"
        )
    if run.precision.name == "nf4" and not METHODS[run.fnmodel.name].quantized_base:
        able = sorted(name for name, method in METHODS.items() if method.quantized_base)
        raise ConfigError(
            f"precision=nf4 with fnmodel={run.fnmodel.name} is not allowed: 4-bit base weights cannot "
            f"be trained by it; choose one of: {', '.join(able)}"
        )
    _check_selection(run)
    run.fnmodel.check_run(run)


def _check_selection(run: RunConfig) -> None:
    """train.keep_best names val_loss or a metric of the dataset; it and train.early_stop need validations."""
    t = run.train
    if t.keep_best is not None:
        from rosa.data import get_spec

        allowed = ["val_loss", *get_spec(run.dataset.name).metrics]
        if t.keep_best not in allowed:
            raise ConfigError(
                f"train.keep_best={t.keep_best!r} is not allowed{did_you_mean(t.keep_best, allowed)}; choose one of: "
                f"null, {', '.join(allowed)} (val_loss or a metric of dataset {run.dataset.name})"
            )
    for key, value in (("train.keep_best", t.keep_best), ("train.early_stop", t.early_stop)):
        if value is not None and t.eval_every == 0:
            raise ConfigError(
                f"{key} needs validations during training, but train.eval_every=0; "
                "allowed: train.eval_every=N (steps) or train.eval_every=epoch"
            )
