"""Any HF PEFT method as a baseline: ``fnmodel=peft fnmodel.peft_type=LORA fnmodel.config.use_dora=true``.

Researchers compare a new method against many baselines; HF PEFT implements ~50 (DoRA, PiSSA,
VeRA, AdaLoRA, IA3, LoHa, OFT, ...). This module runs any of them in our loop, on our data, with
our budgets, checkpoints, resume and evaluation, by handing ``peft_type`` and the ``config``
mapping to PEFT's own config class (``task_type`` is always ``CAUSAL_LM``) and wrapping the model
with ``peft.get_peft_model``. The maths of each method is PEFT's: see its documentation.

- Validation: an unknown ``peft_type``, an unknown ``config`` key or a value PEFT's config refuses
  is one line before anything loads (``fnmodel.config`` is a free mapping on the command line:
  ``rosa.config.rewrite_overrides`` turns ``fnmodel.config.k=v`` into ``++fnmodel.config.k=v``).
- Initialisation is seeded from the run's seed in a forked RNG, so it does not depend on (or move)
  the global RNG.
- State: ``get_peft_model_state_dict`` (every adapter tensor PEFT saves) for checkpoints and the
  adapter, with two exceptions below (AdaLoRA, prompt learning); the adapter folder also holds
  PEFT's own files (``save_pretrained``), which ``peft.PeftModel.from_pretrained(base, folder)`` loads.
- Merging: ``merge_and_unload`` where PEFT can merge; prompt-learning types are evaluated unmerged.
- AdaLoRA re-allocates ranks from gradients: ``update_and_allocate(step)`` runs in the
  ``before_optimizer_step`` hook (gradients visible; PEFT asks for a call between backward and
  ``zero_grad``); its ``total_step`` must be set in ``config``. Its orthogonality regulariser is
  added by PEFT only when the model computes its own loss from ``labels``; our loop computes the
  loss, so it is not added (a documented deviation). Its masking runs before the optimizer step
  (PEFT's example masks after it), so a pruned rank's ``lora_E`` entry has moved by one optimizer
  step when the step ends (a deviation too). Once it has a rank pattern, PEFT saves only the kept
  ranks and resizes the layers on load; our state keeps every rank (what was trained, loadable into
  a fresh model of the config) and the pattern goes in the extra state (the final phase masks with
  it after a resume). Its rank allocator's importance averages are not saved: a resume during
  allocation restarts them, so only a resume after it is exact.

Types (peft 0.21.2 with transformers 5.24; ``tests/methods/test_peft_types.py`` trains each on the tiny
model, evaluates it, and checks that the evaluated model gets the validation loss training measured):

- evaluated merged: LORA (and the DoRA and PiSSA presets), ADALORA, VERA, IA3, LOHA, LOKR, OFT, BOFT,
  HRA, SHIRA, HIRA, SUPERTUNING;
- evaluated unmerged, prompt learning: PROMPT_TUNING, P_TUNING, PREFIX_TUNING, CARTRIDGE;
- refused at validation: MULTITASK_PROMPT_TUNING (it needs a task id per example; PEFT raises
  without one) and CPT (its loss, with its token-type masks, is computed inside PEFT's forward from
  ``labels``; our loop computes the loss itself, so CPT would silently be plain prompt tuning);
- any other type is handed to PEFT as it is, untested here.

Prompt learning (virtual tokens): PROMPT_TUNING and P_TUNING prepend ``num_virtual_tokens`` learned
embeddings to the input, so the model's sequence is longer than ``input_ids``; the shared loss
(``rosa.models.loss``) drops those leading positions. PREFIX_TUNING and CARTRIDGE put learned keys
and values in the attention cache: same length, the attention mask is extended. Two PEFT behaviours
are replaced here, both checked by the tests against PEFT's own forward:

- Generation: PEFT 0.21's ``prepare_inputs_for_generation`` predates transformers 5's ``cache``
  argument: it re-inserts the virtual tokens at every decoding step and never passes the prefix
  cache. :func:`virtual_token_generation_inputs` replaces it (greedy and beam search, batched with
  left padding: each row's positions follow its attention mask, as in training).
- State: PEFT saves only the prompt encoder's *output* (``prompt_embeddings``), which loses
  P-tuning's MLP and a prefix projection's MLP: neither resume nor our evaluation (which rebuilds the
  trainable model) could use it. Our state is every tensor of the prompt encoder; PEFT's own files
  in the adapter folder still hold its format.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import partial
from typing import ClassVar

import torch
from torch import nn

from rosa.methods.base import Method, MethodConfig, StepContext, check_state_keys, register
from rosa.schema import ConfigError, did_you_mean


@dataclass(kw_only=True)
class PeftMethodConfig(MethodConfig):
    """Keys of ``conf/fnmodel/peft.yaml``: ``config`` is a free mapping, checked against PEFT's class."""

    name: str
    peft_type: str  # a peft.PeftType name: LORA, ADALORA, VERA, IA3, LOHA, ...
    config: dict  # keyword arguments of PEFT's config class for peft_type
    FREE_MAPPINGS: ClassVar = ("config",)  # any key below it is PEFT's: Hydra may add it (``++``)

    def run_name_parts(self, lr: float) -> list[str]:
        """The PEFT method and its rank (e.g. ``lora-r8``), then the learning rate."""
        rank = f"-r{self.config['r']}" if "r" in self.config else ""
        return [f"{self.peft_type.lower()}{rank}", f"lr{lr:g}"]

    def check_run(self, run) -> None:
        build_peft_config(self)


def peft_config_classes() -> dict[str, type]:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(k, "value", k)): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


VIRTUAL_TOKEN_TYPES = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "CARTRIDGE")  # the prompt-learning types we run
REFUSED = {  # the other prompt-learning types, and why (the module docstring says more)
    "MULTITASK_PROMPT_TUNING": "it needs a task id per example, which our data does not have",
    "CPT": "its loss is computed inside PEFT's forward from labels, which our loop does not pass",
}


def build_peft_config(cfg: PeftMethodConfig):
    """PEFT's config object for ``cfg``; raises ConfigError (one line) for a bad type, key or value."""
    classes = peft_config_classes()
    if cfg.peft_type not in classes:
        raise ConfigError(
            f"fnmodel.peft_type={cfg.peft_type!r} is unknown{did_you_mean(cfg.peft_type, classes)}; choose one of: {', '.join(sorted(classes))}"
        )
    config_class = classes[cfg.peft_type]
    allowed = [f.name for f in fields(config_class) if f.name not in ("peft_type", "task_type")]
    for key in cfg.config:
        if key not in allowed:
            raise ConfigError(
                f"fnmodel.config.{key}: unknown key for {cfg.peft_type}{did_you_mean(key, allowed)}; "
                f"allowed keys: {', '.join(allowed)}"
            )
    if cfg.peft_type in REFUSED:
        raise ConfigError(
            f"fnmodel.peft_type={cfg.peft_type!r} is not supported: {REFUSED[cfg.peft_type]}; "
            f"allowed prompt-learning types: {', '.join(VIRTUAL_TOKEN_TYPES)}"
        )
    rank = cfg.config.get("r")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ConfigError(f"fnmodel.config.r={rank!r} is out of range; allowed: an integer >= 1")
    try:
        return config_class(task_type="CAUSAL_LM", **cfg.config)
    except (TypeError, ValueError) as err:
        message = " ".join(str(err).split())
        raise ConfigError(f"fnmodel.config={cfg.config!r} is refused by {config_class.__name__}: {message}") from None


@register("peft", PeftMethodConfig)
class PeftBaseline(Method):
    @classmethod
    def table_row(cls, cfg: dict) -> dict:
        """``peft:<type>`` and its options (e.g. ``peft:lora use_dora=True``), PEFT's ``r`` as the rank."""
        options = " ".join(f"{k}={v}" for k, v in sorted((cfg.get("config") or {}).items()) if k != "r")
        label = f"peft:{str(cfg.get('peft_type')).lower()}" + (f" {options}" if options else "")
        return {"method": label, "rank": (cfg.get("config") or {}).get("r"), "density": None}

    def prepare(self, model: nn.Module) -> nn.Module:
        from peft import get_peft_model

        config = build_peft_config(self.cfg)
        self.mergeable = not config.is_prompt_learning
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = get_peft_model(model, config)
        self.peft_config = model.active_peft_config  # the live one: AdaLoRA writes its rank pattern there
        if config.is_prompt_learning:  # PEFT's generate installs this on the base model while it runs
            model.prepare_inputs_for_generation = partial(virtual_token_generation_inputs, model)
        return model

    def before_optimizer_step(self, ctx: StepContext) -> None:
        update = getattr(getattr(ctx.model, "base_model", None), "update_and_allocate", None)
        if update is not None:  # AdaLoRA: rank re-allocation from the gradients of this step
            update(ctx.step)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        if self.peft_config.is_prompt_learning:  # every tensor of the prompt encoder (docstring: State)
            return {f"prompt_encoder.{n}": t.detach() for n, t in model.prompt_encoder.state_dict().items()}
        with self._full_rank():
            return {n: t.detach() for n, t in get_peft_model_state_dict(model).items()}

    def load_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        check_state_keys(set(self.state_dict(model)), state)
        if self.peft_config.is_prompt_learning:
            model.prompt_encoder.load_state_dict({n.removeprefix("prompt_encoder."): t for n, t in state.items()})
        else:
            with self._full_rank():
                set_peft_model_state_dict(model, state)

    @contextmanager
    def _full_rank(self):
        """AdaLoRA's tensors at their full rank. With a rank pattern set, PEFT saves only the ranks it
        keeps and resizes the layers on load; but the pruned ranks' ``lora_E`` entries are not zero
        when a step ends (the module docstring), and a resume loads the state before the extra state
        that holds the pattern. Every rank is what was trained, and a fresh model of the run's config
        loads it. Other types have no rank pattern to hide."""
        if self.cfg.peft_type != "ADALORA":
            yield
            return
        pattern, self.peft_config.rank_pattern = self.peft_config.rank_pattern, None
        try:
            yield
        finally:
            self.peft_config.rank_pattern = pattern

    def extra_state(self) -> dict:
        if self.cfg.peft_type == "ADALORA" and self.peft_config.rank_pattern:
            return {"rank_pattern": self.peft_config.rank_pattern}
        return {}

    def load_extra_state(self, state: dict) -> None:
        if "rank_pattern" in state:  # AdaLoRA's final phase masks with it; a later allocation replaces it
            self.peft_config.rank_pattern = state["rank_pattern"]

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()

    def describe(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in sorted(self.cfg.config.items()))
        return f"peft {self.cfg.peft_type}" + (f" ({options})" if options else "")

    def save_adapter(
        self, model: nn.Module, directory, extra_config: dict | None = None, tensors: dict | None = None
    ) -> None:
        super().save_adapter(model, directory, extra_config, tensors)
        model.save_pretrained(str(directory))  # PEFT's own format beside ours


def virtual_token_generation_inputs(peft_model, input_ids: torch.Tensor, **kwargs) -> dict:
    """One generation step's model inputs for a prompt-learning model, placing the virtual tokens as
    training placed them (PEFT 0.21's own version of this predates transformers 5's ``cache`` argument:
    it re-inserts the virtual tokens at every decoding step and never passes the prefix cache).

    Training runs ``[virtual tokens, prompt, target, right padding]`` at positions 0, 1, ...: the
    first prompt token sits at position ``n_virtual`` (prefix tuning and CARTRIDGE: after
    ``n_virtual`` cached keys/values). Generation pads on the left, so each row's positions come from
    its attention mask (``n_virtual`` + the count of real tokens before it) and the virtual tokens get
    positions 0..n_virtual-1 in every row: with rotary positions a padded row then sees exactly the
    relative distances training saw. The virtual tokens go in whenever the whole sequence runs: at
    the first step with a cache, at every step without one."""
    config = peft_model.active_peft_config
    n_virtual = config.num_virtual_tokens
    inputs = peft_model.base_model_prepare_inputs_for_generation(input_ids, **kwargs)
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is None:  # transformers drops an all-ones mask (no padding); the virtual tokens need one
        mask = torch.ones_like(input_ids)
    rows, length = ids.shape
    positions = (mask.long().cumsum(dim=1) - 1)[:, -length:] + n_virtual
    inputs["attention_mask"] = torch.cat([mask.new_ones(rows, n_virtual), mask], dim=1)
    if length == input_ids.shape[1]:  # the whole sequence runs (prefill, or any step without a cache)
        prompt = peft_model.get_prompt(batch_size=rows)
        if config.peft_type in ("PREFIX_TUNING", "CARTRIDGE"):  # a cache holding the virtual keys/values
            inputs["cache"] = prompt
        else:
            embeds = peft_model.word_embeddings(ids)
            inputs["inputs_embeds"] = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
            inputs["input_ids"] = None
            virtual = torch.arange(n_virtual, device=positions.device).expand(rows, -1)
            positions = torch.cat([virtual, positions], dim=1)
    inputs["position_ids"] = positions
    return inputs
