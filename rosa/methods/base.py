"""The method interface, and the helpers every adapter method shares.

A *method* turns a pretrained causal LM into a model whose trainable parameters are the method's
own (adapters, or every weight for full fine-tuning), and talks to the training loop through a few
hooks. The loop (``rosa/training/loop.py``) never needs to know which method it runs.

A method module registers itself: ``@register("name", NameConfig, aliases=())`` on its Method
subclass, where ``NameConfig`` is the dataclass (a :class:`MethodConfig`) of its
``conf/fnmodel/<name>.yaml`` (checked by ``rosa.config``). ``rosa.methods`` imports every module of
the package, so a new method is one module plus one YAML. The rest of the package asks a method, never
names it: its run folder's readable name (``MethodConfig.run_name_parts``), its cross-key checks
(``check_run``), its label in tables (``Method.table_row``), its capabilities (``mergeable``,
``trains_base_weights``, ``quantized_base``, ``budget_unit``), and before the run folder exists whether
it fits the model and the device (``check_fits``: ``check_layers``, ``check_device``; tests/methods/test_method_knowledge.py).

Lifecycle, as the loop drives it::

    method = get_method(cfg.fnmodel, seed=cfg.seed)
    model = method.prepare(model)                    # inject adapters, freeze the base
    groups = method.param_groups(model, cfg.train)   # optimizer groups, each with its own lr
    for every optimizer step:
        req = method.before_step(ctx)                # e.g. ROSA resamples its subspace here
        ... forward / backward over the micro-batches ...
        extra = method.loss_term(ctx)                # a regulariser, backpropagated with the step's loss
        ... gradient clipping ...
        method.before_optimizer_step(ctx)            # gradients visible (e.g. AdaLoRA's rank allocation)
        ... optimizer step, zero_grad ...
        req |= method.after_step(ctx)                # e.g. RoSA builds its masks here
        # the loop honours req: rebuild the optimizer (new parameters) and/or restart the schedule

Checkpoints hold ``method.state_dict(model)`` (every adapter tensor: trainable and frozen adapter
parameters and the layers' persistent buffers such as masks or indices; a buffer registered with
``persistent=False``, e.g. one shared by every layer and rebuilt from the seed, is not saved) and
``method.extra_state()`` (small JSON-able bookkeeping). On resume the
loop builds a fresh model, calls ``prepare`` and then ``load_state_dict`` / ``load_extra_state``;
a method whose structure changes during training (masks, subspaces) rebuilds it from those.

Adapters are initialised from a generator seeded with the run's seed (``self.generator``), not
from the global RNG, so the initial adapter does not depend on what ran before it and a restart
re-creates exactly the same initial LoRA.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rosa.schema import ConfigError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- loop <-> method
@dataclass
class StepContext:
    """What a hook sees of the loop. ``step`` counts optimizer steps done so far (monotonic over
    the whole run, restarts included); ``phase_step`` counts them since the last restart."""

    model: nn.Module
    step: int
    phase_step: int
    epoch: int
    steps_per_epoch: int
    total_steps: int
    micro_batches_per_step: int
    run_dir: Path | None = None


@dataclass
class LoopRequest:
    """What a hook may ask of the loop.

    rebuild_optimizer: the set of trainable parameters changed (new tensors). The loop builds a new
        optimizer from ``param_groups`` with the same hyperparameters; parameters it already knew
        keep their moments, new ones start fresh. The LR schedule continues.
    restart: start training over (RoSA's restart after mask selection): fresh optimizer, schedule and
        data order from the beginning; the global step keeps counting for logs and checkpoints.
    """

    rebuild_optimizer: bool = False
    restart: bool = False

    def __or__(self, other: "LoopRequest | None") -> "LoopRequest":
        if other is None:
            return self
        return LoopRequest(self.rebuild_optimizer or other.rebuild_optimizer, self.restart or other.restart)


# --------------------------------------------------------------------------- registry
METHODS: dict[str, type["Method"]] = {}  # fnmodel.name -> Method subclass (its ``config_class`` is the schema)


def register(name: str, config_class: type, aliases: tuple[str, ...] = ()):
    """Class decorator: the Method subclass is ``fnmodel=<name>`` (or one of its ``aliases``, e.g. the
    paper's own name), configured by ``config_class``."""

    def decorate(method_class: type["Method"]) -> type["Method"]:
        if name in METHODS:
            raise ValueError(
                f"method {name!r} is registered twice ({METHODS[name].__module__}, {method_class.__module__})"
            )
        method_class.name, method_class.config_class, method_class.aliases = name, config_class, tuple(aliases)
        METHODS[name] = method_class
        return method_class

    return decorate


def method_aliases() -> dict[str, str]:
    """alias -> method name, for every registered method."""
    return {alias: name for name, method in METHODS.items() for alias in method.aliases}


class MethodConfig:
    """Base of every method's config dataclass: what the rest of the package may ask a config without
    knowing its keys (the run folder's readable name, cross-key checks)."""

    def run_name_parts(self, lr: float) -> list[str]:
        """The method's part of a run folder's readable name (``rosa.runs.readable_name``): rank ``r``,
        density ``d`` and budget ``b`` where the method has them, then the learning rate."""
        parts = []
        for key, short in (("rank", "r"), ("density", "d"), ("budget", "b")):
            value = getattr(self, key, None)
            if value not in (None, 0, 0.0) or (key == "rank" and value == 0):
                parts.append(f"{short}{value}")
        return parts + [f"lr{lr:g}"]

    def check_run(self, run) -> None:
        """Checks across this section and the rest of the run (ConfigError, one line); values only."""


# --------------------------------------------------------------------------- base layers
def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's Conv1D: a linear layer whose weight is stored transposed, as [in, out]."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def is_linear_like(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of an nn.Linear or a Conv1D."""
    if is_conv1d(module):
        n_in, n_out = module.weight.shape
        return n_out, n_in
    return module.out_features, module.in_features


def dense_weight(module: nn.Module, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The weight as an [out, in] dense tensor (dequantised when the base is 4-bit)."""
    weight = module.weight
    if hasattr(weight, "get_original_weight"):  # torchao NF4Tensor
        weight = weight.get_original_weight()
    weight = weight.detach()
    if is_conv1d(module):
        weight = weight.t()
    return weight.to(dtype) if dtype is not None else weight


def base_weight_for_matmul(module: nn.Module) -> torch.Tensor:
    """The [out, in] weight without a copy: a 4-bit (torchao NF4) weight as it is, for a kernel that
    dequantises it itself (``rosa.kernels.dense_plus_sparse_linear``), else a detached view."""
    if hasattr(module.weight, "get_original_weight"):
        return module.weight
    return dense_weight(module)


def set_dense_weight(module: nn.Module, weight_out_in: torch.Tensor) -> None:
    """Write an [out, in] weight back into an nn.Linear or Conv1D (in place, same dtype).

    A 4-bit (torchao NF4) weight is replaced by a dense frozen parameter in its compute dtype
    (bf16): merging onto a 4-bit base yields a plain bf16 layer, with no re-quantisation."""
    target = module.weight
    new = weight_out_in.t() if is_conv1d(module) else weight_out_in
    if hasattr(target, "get_original_weight"):  # torchao NF4Tensor
        module.weight = nn.Parameter(new.to(target.dtype).contiguous(), requires_grad=False)
        return
    with torch.no_grad():
        target.copy_(new.to(target.dtype).contiguous())


class AdaptedLayer(nn.Module):
    """A frozen base linear layer plus a method's trainable update.

    Subclasses implement ``forward`` and ``delta_weight`` (the [out, in] change that merging adds to
    the base weight). ``base`` keeps the original module so that merging and un-wrapping are exact.
    """

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.out_features, self.in_features = linear_shape(base)

    @property
    def weight(self) -> torch.Tensor:  # HF code sometimes reads `.weight.dtype` / `.device`
        return self.base.weight

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def merged_base(self) -> nn.Module:
        """The base module with the update folded in (returns ``base``, modified in place)."""
        delta = self.delta_weight().to(torch.float32)
        set_dense_weight(self.base, dense_weight(self.base, torch.float32) + delta)
        return self.base


# --------------------------------------------------------------------------- target modules
ALL_LINEAR = "all-linear"


def find_target_modules(model: nn.Module, target_modules: str | Iterable[str]) -> list[str]:
    """Names of the linear layers to adapt, with HF PEFT's matching rules.

    - ``"all-linear"``: every nn.Linear / Conv1D except the output head;
    - a string otherwise: a regular expression that must match the full module name;
    - a list: a module matches if its name equals an entry or ends with ``"." + entry``.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = []
    for name, module in model.named_modules():
        if not is_linear_like(module) or isinstance(module, AdaptedLayer):
            continue
        if target_modules == ALL_LINEAR:
            hit = module is not head
        elif isinstance(target_modules, str):
            hit = re.fullmatch(target_modules, name) is not None
        else:
            hit = any(name == t or name.endswith("." + t) for t in target_modules)
        if hit:
            names.append(name)
    if not names:
        leaves = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if is_linear_like(m) and m is not head})
        raise ValueError(
            f"fnmodel.target_modules={target_modules!r} matches no linear layer of the model; allowed: "
            f"'all-linear', a list of names or a regex over module names (this model's: {', '.join(leaves)})"
        )
    return names


def wrap_target_modules(model: nn.Module, target_modules, make_layer) -> list[str]:
    """Freeze the whole model, then replace each target linear layer by ``make_layer(base, index)``
    (an AdaptedLayer). Returns the names of the wrapped layers."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = find_target_modules(model, target_modules)
    for index, name in enumerate(names):
        replace_module(model, name, make_layer(model.get_submodule(name), index))
    return names


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def adapted_layers(model: nn.Module) -> dict[str, AdaptedLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AdaptedLayer)}


# --------------------------------------------------------------------------- the interface
class Method:
    """Base class: full behaviour of a method that adds nothing and trains nothing; subclasses
    override what they need. ``cfg`` is the method's own config section (``cfg.fnmodel``)."""

    name: str = "base"  # set by @register
    config_class: type | None = None
    mergeable: bool = True  # whether merge() folds the method into plain base weights (evaluation
    # runs an unmergeable method's model as it is, e.g. PEFT prompt tuning)
    trains_base_weights: bool = False  # full fine-tuning: over several ranks the loop shards it (FSDP)
    quantized_base: bool = True  # whether it trains on a 4-bit (NF4) base (full fine-tuning cannot)
    budget_unit: bool = False  # whether its trainable count per rank is the unit of tables' budgets (LoRA)
    aliases: tuple[str, ...] = ()  # set by @register

    @classmethod
    def table_row(cls, cfg: dict) -> dict:
        """How results tables show a run of this method, from its config section (a dict, as in a run's
        config.yaml): ``{"method": label, "rank": ..., "density": ...}`` (None where it has none)."""
        return {"method": cls.name, "rank": cfg.get("rank"), "density": cfg.get("density")}

    def __init__(self, cfg: Any, seed: int = 0):
        self.cfg = cfg
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    # -- building
    def prepare(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict]:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"name": "all", "params": params, "lr": float(train_cfg.lr)}]

    def trainable_parameters(self, model: nn.Module) -> int:
        """Exact count of trainable scalars (sparse values count once each)."""
        return sum(p.numel() for g in self.param_groups(model, _LR1) for p in g["params"])

    def check_fits(self, model: nn.Module, device: torch.device) -> None:
        """Before ``prepare`` (``rosa.methods.build_model``): raise ConfigError (one line) when the
        config does not fit ``device`` (``check_device``) or the model's target layers (``check_layers``)."""
        try:
            self.check_device(device)
            target_modules = getattr(self.cfg, "target_modules", None)
            if target_modules is not None:
                names = find_target_modules(model, target_modules)
                self.check_layers({name: linear_shape(model.get_submodule(name)) for name in names})
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        """Raise ValueError (one line) when the config does not fit the target layers' (out, in)
        ``shapes``. By default an
        integer ``rank`` may not exceed any target layer's min(out, in): a larger rank adds no
        capacity, only memory (a typo like 100000 would fail allocating)."""
        rank = getattr(self.cfg, "rank", None)
        if not isinstance(rank, int) or isinstance(rank, bool) or not shapes:
            return
        name, (out_features, in_features) = min(shapes.items(), key=lambda item: min(item[1]))
        if rank > min(out_features, in_features):
            raise ValueError(
                f"fnmodel.rank={rank} exceeds min(out, in) = {min(out_features, in_features)} of layer "
                f"{name} ({out_features}x{in_features}); allowed: rank <= "
                f"{min(out_features, in_features)} for this model's target layers"
            )

    def check_device(self, device: torch.device) -> None:
        """Raise ValueError (one line) when the method cannot run on
        ``device`` (e.g. a kernel choice that needs CUDA). Runs on the machine that trains."""

    # -- hooks (the loop calls each once per optimizer step, in this order; see the module docstring)
    def before_step(self, ctx: StepContext) -> LoopRequest | None:
        """Before the step's forward passes (e.g. ROSA resamples its subspace here). May return a
        LoopRequest (rebuild the optimizer: new parameters; restart)."""
        return None

    def loss_term(self, ctx: StepContext) -> torch.Tensor | None:
        """A scalar added to the step's loss after the micro-batches' backward (a regulariser on the
        adapter, e.g. an orthogonality penalty), or None. Its gradient joins the step's gradients
        before clipping; the logged loss includes it."""
        return None

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """After backward and clipping, before the optimizer step: every trainable parameter's
        ``.grad`` holds this step's (unscaled, clipped) gradient. ``ctx.step`` is the step about
        to be taken (0-based)."""
        return None

    def after_step(self, ctx: StepContext) -> LoopRequest | None:
        """After the optimizer step; ``ctx.step`` counts it. May return a LoopRequest (e.g. RoSA,
        once its masks are chosen: restart)."""
        return None

    def describe(self) -> str:
        """One line for the log: what the method is doing (e.g. its phase)."""
        return self.name

    # -- state
    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every tensor that defines the adapter: trainable parameters and method buffers."""
        return {n: t.detach() for n, t in _adapter_tensors(model).items()}

    def load_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        current = _adapter_tensors(model)
        check_state_keys(set(current), state)
        with torch.no_grad():
            for name, tensor in current.items():
                tensor.copy_(state[name].to(tensor.dtype))

    def write_once_keys(self, names) -> tuple[str, set[str]] | None:
        """Of the state tensors ``names``, those that change only at rare events (ROSA's W_fixed, at a
        resample), with a tag naming their current version: a checkpoint writes them once per tag and
        links the same file into later checkpoints. None (the default): every checkpoint writes all."""
        return None

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        return None

    # -- after training
    def merge(self, model: nn.Module) -> nn.Module:
        """Fold every adapter into its base weight and unwrap it (in place)."""
        for name, layer in adapted_layers(model).items():
            replace_module(model, name, layer.merged_base())
        return model

    def save_adapter(
        self,
        model: nn.Module,
        directory: Path,
        extra_config: dict | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """``adapter.safetensors`` (all adapter tensors) + ``adapter.json`` (method config).

        ``tensors``: ``state_dict(model)`` when the caller already has it (gathered from FSDP shards)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = self.state_dict(model) if tensors is None else tensors
        tensors = {n: t.contiguous().cpu() for n, t in tensors.items()}
        save_file(tensors, str(directory / "adapter.safetensors"))
        config = {"method": self.name, "config": _plain(self.cfg), "extra_state": self.extra_state()}
        config.update(extra_config or {})
        (directory / "adapter.json").write_text(json.dumps(config, indent=2))

    def load_adapter(self, model: nn.Module, directory: Path) -> None:
        directory = Path(directory)
        config = json.loads((directory / "adapter.json").read_text())
        self.load_extra_state(config.get("extra_state", {}))
        self.load_state_dict(model, load_file(str(directory / "adapter.safetensors")))


def check_state_keys(expected: set[str], state: dict) -> None:
    """Raise (one line) unless ``state`` holds exactly the ``expected`` tensor names."""
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"adapter state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")


class _LR1:
    lr = 1.0


def _adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters, plus what each adapted layer's own ``state_dict`` holds besides its base
    module: frozen adapter parameters (ROSA's W_fixed) and persistent buffers (masks, indices); a
    buffer registered ``persistent=False`` is left out, as ``state_dict`` leaves it out."""
    tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for layer_name, layer in adapted_layers(model).items():
        for n, t in layer.state_dict(keep_vars=True).items():
            if not n.startswith("base."):
                tensors[f"{layer_name}.{n}"] = t
    return tensors


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if hasattr(cfg, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(cfg)
    if hasattr(cfg, "__dict__"):
        return dict(vars(cfg))
    return cfg
