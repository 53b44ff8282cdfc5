"""The configuration schema, name aliases, and validation with one-line errors.

Hydra composes ``conf/`` (groups: model, dataset, fnmodel, precision); this module checks the result
against the dataclasses below *before* any model or data is loaded. A typo'd key, an unknown name or
an out-of-range value raises :class:`ConfigError` whose message is one line naming the key, the bad
value and what is allowed; ``train.py`` prints it and exits with status 2 before creating anything.

Two spellings select a group: ``fnmodel=lora`` (Hydra's) and ``fnmodel.name=lora`` (the ROSA code
base's). :func:`rewrite_overrides` turns the second into the first before Hydra sees the command
line, so both load the choice's own defaults. Aliases: ``rosa`` -> ``rosa-orthogonal`` (the ROSA
paper's own name), ``none`` -> ``fft``, ``e2e_nlg`` -> ``e2e``.
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import logging
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUP_KEYS = ("fnmodel", "dataset", "precision")   # `<group>.name=X` selects group X
FREE_MAPPINGS = ("fnmodel.config.",)               # keys Hydra may add (fnmodel=peft: PEFT's config)
ALIASES = {
    "fnmodel": {"rosa": "rosa-orthogonal", "none": "fft"},
    "dataset": {"e2e_nlg": "e2e"},
    "precision": {},
}


class ConfigError(ValueError):
    """A bad configuration value; ``str(err)`` is the one-line message shown to the user."""


def check(predicate, allowed: str):
    """Field metadata: a range check and its description for the error message."""
    return {"check": predicate, "allowed": allowed}


positive = check(lambda v: v > 0, "a number > 0")
at_least_1 = check(lambda v: v >= 1, "an integer >= 1")
non_negative = check(lambda v: v >= 0, "a number >= 0")
probability = check(lambda v: 0 <= v < 1, "a number in [0, 1)")
unit_interval = check(lambda v: 0 <= v <= 1, "a number in [0, 1]")


# ----------------------------------------------------------------------------- schema
@dataclass
class ModelConfig:
    name: str = "tiny"                    # "tiny" (built in), an HF causal-LM id, a local folder, a .gguf file
    revision: Optional[str] = None
    trust_remote_code: bool = False
    cache: Optional[str] = None           # HF cache dir for the weights; converted GGUF folders go under it
    gradient_checkpointing: bool = False
    chat_template: bool = False           # render prompts with the tokenizer's chat template


@dataclass
class DatasetConfig:
    name: str = "e2e"
    source: Literal["sample", "local", "hub"] = "sample"
    path: Optional[str] = None            # folder with the original release files (source=local)
    cache: Optional[str] = None           # HF datasets cache dir (source=hub)
    splits: dict = field(default_factory=dict)
    max_length: int = field(default=512, metadata=check(lambda v: v >= 8, "an integer >= 8"))
    sample_rows: dict = field(default_factory=dict)
    sample_seed: int = 0
    limit: Optional[int] = field(default=None, metadata=at_least_1)


@dataclass
class PrecisionConfig:
    name: Literal["auto", "fp32", "bf16", "fp16", "nf4"] = "auto"
    base_dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"     # frozen weights
    param_dtype: Literal["fp32", "bf16"] = "fp32"                    # trainable weights
    autocast: Literal["auto", "none", "bf16", "fp16"] = "auto"


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "sgd"] = "adamw"                               # sgd: the ROSA paper's (plain, momentum 0)
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = field(default=1e-8, metadata=positive)
    weight_decay: float = field(default=0.0, metadata=non_negative)
    momentum: float = field(default=0.0, metadata=non_negative)          # sgd only


@dataclass
class TrainConfig:
    epochs: int = field(default=1, metadata=at_least_1)
    max_steps: Optional[int] = field(default=None, metadata=non_negative)  # overrides epochs; 0: the base model
    batch_size: int = field(default=8, metadata=at_least_1)              # global, per optimizer step
    micro_batch_size: int = field(default=8, metadata=at_least_1)        # per forward
    lr: float = field(default=2e-4, metadata=positive)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = field(default=0, metadata=non_negative)
    max_grad_norm: Optional[float] = field(default=1.0, metadata=positive)
    loss_on: Literal["target", "all"] = "target"
    loss_norm: Literal["tokens", "examples"] = "tokens"  # step loss / its target tokens, or the mean of per-example means
    eval_every: int = field(default=0, metadata=non_negative)            # 0: only at the end
    eval_batches: Optional[int] = field(default=16, metadata=at_least_1)  # validation micro-batches; null: all
    checkpoint_every: int = field(default=50, metadata=at_least_1)
    log_every: int = field(default=1, metadata=at_least_1)
    eval_at_end: bool = True               # run eval.py's evaluation on the test split at the end
    sample_at_eval: bool = True            # log a generated text sample at each validation


@dataclass
class EvalConfig:
    split: Literal["validation", "test"] = "test"
    batch_size: int = field(default=16, metadata=at_least_1)
    limit: Optional[int] = field(default=None, metadata=at_least_1)
    max_new_tokens: Optional[int] = field(default=None, metadata=at_least_1)
    num_beams: Optional[int] = field(default=None, metadata=at_least_1)
    merge: bool = True


@dataclass
class OutputConfig:
    path: str = "runs"
    name: Optional[str] = None             # replaces the readable part of the run folder's name


@dataclass
class FFTConfig:
    name: str = "fft"


@dataclass
class LoRAConfig:
    name: str = "lora"
    rank: int = field(default=8, metadata=at_least_1)
    alpha: float = field(default=16.0, metadata=positive)
    dropout: float = field(default=0.05, metadata=probability)
    rslora: bool = False
    target_modules: Any = "all-linear"     # "all-linear", a list of names, or a regex


METHOD_SCHEMAS: dict[str, type] = {"fft": FFTConfig, "lora": LoRAConfig}


def register_method_schema(name: str, schema: type) -> None:
    METHOD_SCHEMAS[name] = schema


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    fnmodel: Any = None                    # one of METHOD_SCHEMAS, chosen by fnmodel.name
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 42
    device: str = "auto"                   # auto | cpu | cuda | cuda:N
    threads: Optional[int] = field(default=None, metadata=at_least_1)  # CPU threads; null: torch's default
    experiment: Optional[str] = None       # name of the +experiment preset, for the record


# ----------------------------------------------------------------------------- choices
def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def resolve_choice(group: str, value: str) -> str:
    """Map an alias to its canonical name; raise a one-line error for an unknown name."""
    canonical = ALIASES.get(group, {}).get(value, value)
    if canonical != value:
        log.info("%s.name=%s resolves to %s", group, value, canonical)
    choices = group_choices(group)
    if canonical not in choices:
        aliases = ", ".join(f"{a} -> {c}" for a, c in ALIASES.get(group, {}).items())
        hint = _did_you_mean(value, choices + list(ALIASES.get(group, {})))
        raise ConfigError(f"{group}.name={value!r} is unknown{hint}; choose one of: {', '.join(choices)}"
                          + (f" (aliases: {aliases})" if aliases else ""))
    return canonical


def _did_you_mean(value: str, options: list[str]) -> str:
    close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------- command line
def rewrite_overrides(overrides: list[str]) -> list[str]:
    """Turn ``fnmodel.name=X`` into ``fnmodel=X`` (likewise dataset, precision), resolve aliases in
    both spellings, and check group names, so that a wrong name fails with one line before Hydra
    composes anything. Sweeps (``fnmodel.name=lora,rosa``) are rewritten element-wise."""
    out = []
    for arg in overrides:
        key, eq, value = arg.partition("=")
        if eq and key.startswith(FREE_MAPPINGS):  # a free mapping: its keys are checked by the method
            out.append(f"++{arg}")
            continue
        bare = key.lstrip("+~")
        group = bare[: -len(".name")] if bare.endswith(".name") else bare
        if not eq or group not in GROUP_KEYS or (bare != group and bare != f"{group}.name"):
            out.append(arg)
            continue
        names = [v.strip() for v in value.split(",")]
        resolved = [resolve_choice(group, n) for n in names]
        out.append(f"{group}={','.join(resolved)}")
    return out


def expand_sweeps(overrides: list[str], limit: int = 256) -> list[list[str]]:
    """Every combination of a multirun command line, for validating each before launching."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    options = []
    for override in parsed:
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
            options.append([f"{override.get_key_element()}={v}" for v in values])
        else:
            options.append([override.input_line])
    combos = list(itertools.islice(itertools.product(*options), limit))
    return [list(c) for c in combos]


def compose(overrides: list[str]):
    """Compose ``conf/`` with Hydra's compose API (outside @hydra.main), for validation and tests."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    job_overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=job_overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_one_line_hydra_error(err, job_overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def _one_line_hydra_error(err: Exception, overrides: list[str]) -> str:
    text = str(err)
    full_key = next((l.split("full_key:")[1].strip() for l in text.splitlines() if "full_key:" in l), None)
    if "not in struct" in text or "Could not override" in text or ("Key '" in text and "not in" in text):
        key = full_key or text.split("'")[1]
        return _unknown_key_message(key)
    if "Could not find" in text and "'" in text:  # unknown group option, e.g. model=gpt9
        group = text.split("'")[1].split("/")[0]
        return (f"{group}: {text.splitlines()[0].split(':')[-1].strip() or text.splitlines()[0]}; "
                f"choose one of: {', '.join(group_choices(group))}")
    return "config error: " + " ".join(text.split())


def _unknown_key_message(key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    known = _known_keys(parent)
    hint = _did_you_mean(leaf, known)
    where = f" under {parent}" if parent else ""
    return f"{key}: unknown key{hint}; allowed keys{where}: {', '.join(known)}"


def _known_keys(parent: str) -> list[str]:
    schema: Any = RunConfig
    for part in [p for p in parent.split(".") if p]:
        hints = get_type_hints(schema) if hasattr(schema, "__dataclass_fields__") else {}
        schema = hints.get(part)
        if schema is None or not hasattr(schema, "__dataclass_fields__"):
            return []
    return [f.name for f in fields(schema)]


# ----------------------------------------------------------------------------- validation
def validate(cfg) -> RunConfig:
    """Check a composed config (DictConfig or dict) against the schema; return it as dataclasses."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    data.pop("hydra", None)
    method = (data.get("fnmodel") or {}).get("name")
    if method not in METHOD_SCHEMAS:
        _load_method_schemas()
    if method not in METHOD_SCHEMAS:
        raise ConfigError(f"fnmodel.name={method!r} is unknown; choose one of: {', '.join(sorted(METHOD_SCHEMAS))}")
    run = _build(RunConfig, data, "", method_schema=METHOD_SCHEMAS[method])
    _check_cross_field(run)
    return run


def _load_method_schemas() -> None:
    import rosa.methods  # noqa: F401  (registers the schemas of every method)


def _build(schema: type, data: dict, prefix: str, method_schema: type | None = None):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    known = {f.name: f for f in fields(schema)}
    for key in data:
        if key not in known:
            raise ConfigError(_unknown_key_message(prefix + key))
    hints = get_type_hints(schema)
    values = {}
    for name, f in known.items():
        key = prefix + name
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                raise ConfigError(f"{key}: missing value")
            continue
        typ = method_schema if (schema is RunConfig and name == "fnmodel") else hints[name]
        values[name] = _coerce(typ, data[name], key)
        meta = f.metadata
        if meta and values[name] is not None and not meta["check"](values[name]):
            raise ConfigError(f"{key}={values[name]!r} is out of range; allowed: {meta['allowed']}")
    return schema(**values)


def _coerce(typ, value, key: str):
    origin = get_origin(typ)
    if hasattr(typ, "__dataclass_fields__"):
        return _build(typ, value, key + ".")
    if origin is Union:
        inner = [a for a in get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return _coerce(inner[0], value, key)
    if origin is Literal:
        allowed = get_args(typ)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed{_did_you_mean(value, [str(a) for a in allowed])}; "
                              f"choose one of: {', '.join(map(str, allowed))}")
        return value
    if typ is Any:
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not allowed; expected true or false")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}={value!r} is not allowed; expected an integer")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} is not allowed; expected a number")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} is not allowed; expected a string")
        return value
    if typ in (list, dict):
        if not isinstance(value, typ):
            raise ConfigError(f"{key}={value!r} is not allowed; expected a {typ.__name__}")
        return value
    return value


def _check_cross_field(run: RunConfig) -> None:
    t = run.train
    if t.batch_size % t.micro_batch_size:
        raise ConfigError(f"train.batch_size={t.batch_size} is not a multiple of train.micro_batch_size="
                          f"{t.micro_batch_size}; allowed: batch sizes that micro_batch_size divides")
    if len(t.optimizer.betas) != 2 or not all(0 <= b < 1 for b in t.optimizer.betas):
        raise ConfigError(f"train.optimizer.betas={t.optimizer.betas!r} is not allowed; expected two numbers in [0, 1)")
    if run.dataset.source == "local" and not run.dataset.path:
        raise ConfigError("dataset.path=None is not allowed with dataset.source=local; "
                          "set dataset.path to the folder holding the original release files")
    if run.precision.name == "nf4" and run.fnmodel.name == "fft":
        raise ConfigError("precision=nf4 with fnmodel=fft is not allowed: 4-bit base weights cannot be "
                          "fully fine-tuned; choose lora, spa, rosa-robust or rosa-orthogonal")
    check_method = getattr(run.fnmodel, "validate", None)
    if check_method:
        check_method(run)


# ----------------------------------------------------------------------------- run identity
# Keys that change nothing about the trained weights: not part of a run's identity.
_IDENTITY_EXCLUDED = {"output", "eval", "device", "experiment", "threads"}
_TRAIN_EXCLUDED = {"checkpoint_every", "log_every", "eval_at_end", "sample_at_eval", "eval_every", "eval_batches"}
# Keys added after runs existed, with the value that reproduces the old behaviour: at that value they
# stay out of the identity, so an upgrade keeps every existing run's folder (and its resume or skip).
_ADDED_KEYS_OLD_BEHAVIOUR = {
    ("model", "chat_template"): False,
    ("train", "loss_norm"): "tokens",
    ("train", "optimizer", "name"): "adamw",
    ("train", "optimizer", "momentum"): 0.0,
}


def run_identity(run: RunConfig) -> dict:
    from dataclasses import asdict

    data = asdict(run)
    for key in _IDENTITY_EXCLUDED:
        data.pop(key, None)
    for key in _TRAIN_EXCLUDED:
        data["train"].pop(key, None)
    for path, old_behaviour in _ADDED_KEYS_OLD_BEHAVIOUR.items():
        parent = data
        for part in path[:-1]:
            parent = parent.get(part, {})
        if path[-1] in parent and parent[path[-1]] == old_behaviour:
            del parent[path[-1]]
    return data


def run_hash(run: RunConfig) -> str:
    blob = json.dumps(run_identity(run), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]
