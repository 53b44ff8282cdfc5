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
import math
import re
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
MAX_STEPS = 10**9        # ~30 years at one step per second: anything above is a typo
MAX_EPOCHS = 10**6
SPLIT_NAMES = ("train", "validation", "test")   # rosa.data.schema.CANONICAL_SPLITS (kept import-free)


def int_range(low: int, high: int):
    return check(lambda v: low <= v <= high, f"an integer in [{low}, {high}]")


def neutral(value) -> dict:
    """Field metadata of a key added after runs existed: ``value`` reproduces the behaviour from
    before the key; at that value the key stays out of the run identity (see run_identity)."""
    return {"neutral": value}


def validator(function):
    """Field metadata: ``function(value, key)`` raises ConfigError (one line) for a bad value."""
    return {"validate": function}


def _check_target_modules(value, key: str) -> None:
    allowed = "'all-linear', a non-empty list of module names or a regular expression (full match)"
    if isinstance(value, str) and value:
        if value == "all-linear":
            return
        try:
            re.compile(value)
        except re.error as err:
            raise ConfigError(f"{key}={value!r} is not a valid regular expression ({err}); allowed: {allowed}") from None
        return
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return
    raise ConfigError(f"{key}={value!r} is not allowed; allowed: {allowed}")


def _check_split_map(values_allowed: str, value_ok, problem: str = "is not allowed"):
    def check_map(value: dict, key: str) -> None:
        for split, item in value.items():
            if split not in SPLIT_NAMES:
                raise ConfigError(_unknown_split_message(f"{key}.{split}"))
            if not value_ok(item):
                raise ConfigError(f"{key}.{split}={item!r} {problem}; allowed: {values_allowed}")
    return validator(check_map)


def _unknown_split_message(key: str) -> str:
    return f"{key}: unknown split; allowed split names: {', '.join(SPLIT_NAMES)}"


def _check_run_name(value: str, key: str) -> None:
    if value and not re.search(r"[/\\\0]", value) and not value.startswith((".", "~")):
        return
    raise ConfigError(f"{key}={value!r} is not allowed; allowed: a folder name without '/', '\\' or a leading "
                      "'.' or '~' (runs stay inside output.path)")


def _check_device(value: str, key: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: auto, cpu, cuda or cuda:N")


TARGET_MODULES = validator(_check_target_modules)


# ----------------------------------------------------------------------------- schema
@dataclass
class ModelConfig:
    name: str = "tiny"                    # "tiny" (built in), an HF causal-LM id, a local folder, a .gguf file
    revision: Optional[str] = None
    trust_remote_code: bool = False
    cache: Optional[str] = None           # HF cache dir for the weights; converted GGUF folders go under it
    gradient_checkpointing: bool = False
    chat_template: bool = field(default=False, metadata=neutral(False))  # render prompts with the tokenizer's chat template


@dataclass
class DatasetConfig:
    name: str = "e2e"
    source: Literal["sample", "local", "hub"] = "sample"
    path: Optional[str] = None            # folder with the original release files (source=local)
    cache: Optional[str] = None           # HF datasets cache dir (source=hub)
    splits: dict = field(default_factory=dict, metadata=_check_split_map(
        "a source split name, a file name or carve:<source split>", lambda v: isinstance(v, str) and v.strip()))
    max_length: int = field(default=512, metadata=check(lambda v: v >= 8, "an integer >= 8"))
    sample_rows: dict = field(default_factory=dict, metadata=_check_split_map(
        "an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "is out of range"))
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
    name: Literal["adamw", "sgd"] = field(default="adamw", metadata=neutral("adamw"))  # sgd: the ROSA paper's (plain, momentum 0)
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = field(default=1e-8, metadata=positive)
    weight_decay: float = field(default=0.0, metadata=non_negative)
    momentum: float = field(default=0.0, metadata={**non_negative, **neutral(0.0)})  # sgd only


@dataclass
class TrainConfig:
    epochs: int = field(default=1, metadata=int_range(1, MAX_EPOCHS))
    max_steps: Optional[int] = field(default=None, metadata=int_range(0, MAX_STEPS))  # overrides epochs; 0: the base model
    batch_size: int = field(default=8, metadata=at_least_1)              # global, per optimizer step
    micro_batch_size: int = field(default=8, metadata=at_least_1)        # per forward
    lr: float = field(default=2e-4, metadata=positive)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = field(default=0, metadata=non_negative)
    max_grad_norm: Optional[float] = field(default=1.0, metadata={**positive, "allow_inf": True})  # inf: no clipping
    loss_on: Literal["target", "all"] = "target"
    loss_norm: Literal["tokens", "examples"] = field(default="tokens", metadata=neutral("tokens"))  # step loss / its target tokens, or the mean of per-example means
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
    name: Optional[str] = field(default=None, metadata=validator(_check_run_name))  # replaces the readable part of the run folder's name


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
    target_modules: Any = field(default="all-linear", metadata=TARGET_MODULES)  # "all-linear", a list of names, or a regex


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
    seed: int = field(default=42, metadata=int_range(0, 2**32 - 1))  # numpy's seed range
    device: str = field(default="auto", metadata=validator(_check_device))  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = field(default=None, metadata=at_least_1)  # CPU threads; null: torch's default
    experiment: Optional[str] = None       # name of the +experiment preset, for the record


# ----------------------------------------------------------------------------- choices
def group_choices(group: str) -> list[str]:
    """The options of a config group, sub-folders included (``experiment``: ``rosa-paper/gsm8k-bf16``)."""
    folder = CONF_DIR / group
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


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


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of a command line; an override its grammar refuses is a one-line ConfigError."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    try:
        return parser.parse_overrides(overrides)
    except OverrideParseException as err:
        raise ConfigError(_parse_error_message(err)) from None


def _parse_error_message(err: Exception) -> str:
    lines = [l for l in str(err).splitlines() if l.strip() and not l.startswith(("See https://", "Error parsing"))]
    reason = " ".join(" ".join(lines).split())
    override = getattr(err, "override", None) or "an override"
    return (f"{override}: not a valid override ({reason}); allowed: Hydra's override grammar; quote a value "
            "holding brackets or other special characters, e.g. 'key=\"value\"'")


def expand_sweeps(overrides: list[str], limit: int = 256) -> list[list[str]]:
    """Every combination of a multirun command line, for validating each before launching."""
    parsed = parse_overrides(overrides)
    options = []
    for override in parsed:
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
            options.append([f"{override.get_key_element()}={v}" for v in values])
        else:
            options.append([override.input_line])
    combos = list(itertools.islice(itertools.product(*options), limit))
    return [list(c) for c in combos]


MAX_SWEEP = 100_000   # combinations one command may launch


def validate_sweep(overrides: list[str], limit: int = 256) -> None:
    """Validate every combination of a multirun command line, before anything launches.

    Up to ``limit`` combinations each is composed by Hydra. A bigger sweep composes once per
    combination of its *group* choices (``fnmodel=lora,fft``: they change defaults) and sets each
    combination of the plain values (``seed=range(0,1000)``) into a copy of that config, which costs
    a validation, not a composition; every combination is still checked. More than ``MAX_SWEEP``
    combinations are refused."""
    from omegaconf import OmegaConf

    combos = expand_sweeps(overrides, limit=limit + 1)
    if len(combos) <= limit:
        for combo in combos:
            validate(compose(combo))
        return
    parsed = parse_overrides(overrides)
    total = math.prod(len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in parsed)
    if total > MAX_SWEEP:
        raise ConfigError(f"the sweep has {total} combinations; allowed: at most {MAX_SWEEP} per command "
                          "(split it into several commands)")
    groups = [o for o in parsed if not o.is_sweep_override() or _is_group(o.get_key_element())]
    values = [o for o in parsed if o.is_sweep_override() and not _is_group(o.get_key_element())]
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
            validate(OmegaConf.create(data))


def _is_group(key: str) -> bool:
    """Whether an override key selects a config group option (``fnmodel``, ``+experiment``)."""
    return (CONF_DIR / key.lstrip("+~").split("@")[0]).is_dir()


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
        return _unknown_split_key(key, overrides) or _unknown_key_message(key, method=_method_of(overrides))
    missing = re.search(r"Could not find '([^']+)'", text)
    if type(err).__name__ == "OverrideParseException":
        return _parse_error_message(err)
    if missing:  # unknown group option, e.g. model=gpt9 or +experiment=nope
        group = missing.group(1).split("/")[0]
        return f"{group}: Could not find {missing.group(1)!r}; choose one of: {', '.join(group_choices(group))}"
    return "config error: " + " ".join(text.split())


def _unknown_split_key(key: str, overrides: list[str]) -> str | None:
    """``dataset.splits={bogus: test}``: name the unknown split, not the mapping."""
    if key not in ("dataset.splits", "dataset.sample_rows"):
        return None
    for override in parse_overrides([o for o in overrides if o.startswith(key + "=")]):
        value = override.value()
        for split in value if isinstance(value, dict) else []:
            if split not in SPLIT_NAMES:
                return _unknown_split_message(f"{key}.{split}")
    return None


def _method_of(overrides: list[str]) -> str:
    """The method a command line selects (``fnmodel=X``), else conf/config.yaml's default."""
    chosen = [o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+~") == "fnmodel"]
    return chosen[-1] if chosen else "lora"


def _unknown_key_message(key: str, known: list[str] | None = None, method: str | None = None) -> str:
    parent, _, leaf = key.rpartition(".")
    known = _known_keys(parent, method) if known is None else known
    hint = _did_you_mean(leaf, known)
    where = f" under {parent}" if parent else ""
    return f"{key}: unknown key{hint}; allowed keys{where}: {', '.join(known)}"


def _known_keys(parent: str, method: str | None = None) -> list[str]:
    schema: Any = RunConfig
    for part in [p for p in parent.split(".") if p]:
        if schema is RunConfig and part == "fnmodel":
            _load_method_schemas()
            schema = METHOD_SCHEMAS.get(method or "")
        else:
            hints = get_type_hints(schema) if hasattr(schema, "__dataclass_fields__") else {}
            schema = hints.get(part)
        if schema is None or not hasattr(schema, "__dataclass_fields__"):
            return []
    return [f.name for f in fields(schema)]


# ----------------------------------------------------------------------------- validation
def validate(cfg) -> RunConfig:
    """Check a composed config (DictConfig or dict) against the schema; return it as dataclasses."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    except OmegaConfBaseException as err:  # ${nope.nope}, ${oc.env:UNSET}, a loop of interpolations
        raise ConfigError(_interpolation_message(cfg, err)) from None
    data.pop("hydra", None)
    method = (data.get("fnmodel") or {}).get("name")
    if method not in METHOD_SCHEMAS:
        _load_method_schemas()
    if method not in METHOD_SCHEMAS:
        raise ConfigError(f"fnmodel.name={method!r} is unknown; choose one of: {', '.join(sorted(METHOD_SCHEMAS))}")
    run = _build(RunConfig, data, "", method_schema=METHOD_SCHEMAS[method])
    _check_cross_field(run)
    return run


def _interpolation_message(cfg, err: Exception) -> str:
    from omegaconf import OmegaConf

    key = getattr(err, "full_key", None) or "config"
    raw: Any = OmegaConf.to_container(cfg, resolve=False)
    for part in key.split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    reason = (str(err).strip().splitlines() or [""])[0]
    return (f"{key}={raw!r}: the interpolation cannot be resolved ({reason}); allowed: a value, or ${{...}} "
            "naming an existing key or a set environment variable")


def _load_method_schemas() -> None:
    import rosa.methods  # noqa: F401  (registers the schemas of every method)


def _build(schema: type, data: dict, prefix: str, method_schema: type | None = None):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    known = {f.name: f for f in fields(schema)}
    for key in data:
        if key not in known:
            raise ConfigError(_unknown_key_message(prefix + key, list(known)))
    hints = get_type_hints(schema)
    values = {}
    for name, f in known.items():
        key = prefix + name
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                raise ConfigError(f"{key}: missing value")
            continue
        typ = method_schema if (schema is RunConfig and name == "fnmodel") else hints[name]
        meta = f.metadata
        values[name] = _coerce(typ, data[name], key, allow_inf=bool(meta and meta.get("allow_inf")))
        if values[name] is None or not meta:
            continue
        if "check" in meta and not meta["check"](values[name]):
            number = isinstance(values[name], (int, float)) and not isinstance(values[name], bool)
            raise ConfigError(f"{key}={values[name]!r} is {'out of range' if number else 'not allowed'}; "
                              f"allowed: {meta['allowed']}")
        if "validate" in meta:
            meta["validate"](values[name], key)
    return schema(**values)


def _coerce(typ, value, key: str, allow_inf: bool = False):
    """``value`` as ``typ``, or a one-line ConfigError. Floats must be finite, anywhere (inside lists
    and free mappings too): inf and nan train nothing useful and fail late; a field whose metadata
    says ``allow_inf`` accepts +inf (e.g. ``train.max_grad_norm``: no clipping)."""
    origin = get_origin(typ)
    if hasattr(typ, "__dataclass_fields__"):
        return _build(typ, value, key + ".")
    if origin is Union:
        inner = [a for a in get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return _coerce(inner[0], value, key, allow_inf)
    if origin is Literal:
        allowed = get_args(typ)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed{_did_you_mean(value, [str(a) for a in allowed])}; "
                              f"choose one of: {', '.join(map(str, allowed))}")
        return value
    if typ is Any:
        _reject_non_finite(value, key)
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
        if not (allow_inf and value == math.inf):
            _reject_non_finite(float(value), key)
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} is not allowed; expected a string")
        return value
    if typ in (list, dict):
        if not isinstance(value, typ):
            raise ConfigError(f"{key}={value!r} is not allowed; expected a {typ.__name__}")
        _reject_non_finite(value, key)
        return value
    return value


def _reject_non_finite(value, key: str, shown=None) -> None:
    """Raise for an inf or nan float in ``value`` (a list is shown whole; a mapping names the key)."""
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
        raise ConfigError(f"train.batch_size={t.batch_size} is not a multiple of train.micro_batch_size="
                          f"{t.micro_batch_size}; allowed: batch sizes that micro_batch_size divides")
    betas = t.optimizer.betas
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
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
# A run's folder name ends with a hash of its *identity*: the settings that decide the trained
# weights. The rule, kept by tests/test_config.py::test_every_schema_key_is_classified:
#
# 1. Every key of every schema is classified, once: in NOT_IDENTITY (and everything below it) when
#    it cannot change the weights (logging and evaluation cadence, output, device, threads); in
#    IDENTITY_V1 when it belonged to the identity before this rule existed (always hashed, as it
#    always was); otherwise it declares its *neutral* value, the behaviour before the key existed
#    (``neutral(value)`` metadata), and is hashed only when it differs from it.
# 2. IDENTITY_V1 never grows: a key added later must declare its neutral value or be listed in
#    NOT_IDENTITY. So an upgrade that adds a key keeps every existing run's folder (and its
#    resume or skip), and any setting that changes training gives a new folder.
# 3. A key's neutral value never changes, and a key never moves between the classes (either would
#    move existing runs to new folders or, worse, merge different runs into one); train() also
#    refuses to resume a folder whose stored config.yaml trains differently
#    (rosa/training/preflight.py: check_same_settings).
NOT_IDENTITY = {
    "RunConfig": {"output", "eval", "device", "experiment", "threads"},
    "TrainConfig": {"checkpoint_every", "log_every", "eval_at_end", "sample_at_eval", "eval_every", "eval_batches"},
}
IDENTITY_V1 = {
    "RunConfig": {"model", "dataset", "fnmodel", "precision", "train", "seed"},
    "ModelConfig": {"name", "revision", "trust_remote_code", "cache", "gradient_checkpointing"},
    "DatasetConfig": {"name", "source", "path", "cache", "splits", "max_length", "sample_rows", "sample_seed", "limit"},
    "PrecisionConfig": {"name", "base_dtype", "param_dtype", "autocast"},
    "TrainConfig": {"epochs", "max_steps", "batch_size", "micro_batch_size", "lr", "optimizer", "scheduler",
                    "warmup_steps", "max_grad_norm", "loss_on"},
    "OptimizerConfig": {"betas", "eps", "weight_decay"},
    "FFTConfig": {"name"},
    "LoRAConfig": {"name", "rank", "alpha", "dropout", "rslora", "target_modules"},
    "RosaOrthogonalConfig": {"name", "rank", "selection", "split", "resample_every", "train_bias", "target_modules"},
    "RosaRobustConfig": {"name", "rank", "alpha", "dropout", "rslora", "density", "budget", "target_modules",
                         "lora_lr", "sparse_lr", "mask_criterion", "mask_samples", "mask_accumulator_device",
                         "warmup_steps", "restart", "mask_path", "impl"},
    "PeftMethodConfig": {"name", "peft_type", "config"},
}


def _listed(table: dict, schema: type, name: str) -> bool:
    return any(name in table.get(cls.__name__, ()) for cls in schema.__mro__)


def run_identity(run) -> dict:
    """The settings that decide the trained weights, as a nested dict; its hash ends the run folder.

    Keys in NOT_IDENTITY are left out; keys in IDENTITY_V1 are always in; every other key declares
    its neutral value (the behaviour before the key existed) and is in only when it differs from it.
    So adding a key at its neutral value keeps every existing run's identity, and any change that
    alters training gives a new one (the full rule is in the comment above)."""
    out = {}
    for f in fields(run):
        value = getattr(run, f.name)
        if _listed(NOT_IDENTITY, type(run), f.name):
            continue
        if "neutral" in f.metadata and value == f.metadata["neutral"]:
            continue
        out[f.name] = run_identity(value) if hasattr(value, "__dataclass_fields__") else json.loads(
            json.dumps(value, default=str))
    return out


def unclassified_keys() -> list[str]:
    """Schema keys that break the rule above (none, or a test fails): unclassified or twice classified."""
    _load_method_schemas()
    problems, seen = [], set()

    def walk(schema: type) -> None:
        if schema in seen:
            return
        seen.add(schema)
        hints = get_type_hints(schema)
        for f in fields(schema):
            classes = [_listed(NOT_IDENTITY, schema, f.name), _listed(IDENTITY_V1, schema, f.name),
                       "neutral" in f.metadata]
            if sum(classes) != 1:
                problems.append(f"{schema.__name__}.{f.name}")
            if not classes[0] and hasattr(hints[f.name], "__dataclass_fields__"):
                walk(hints[f.name])

    for schema in (RunConfig, *METHOD_SCHEMAS.values()):
        walk(schema)
    return problems


def run_hash(run: RunConfig) -> str:
    blob = json.dumps(run_identity(run), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]
