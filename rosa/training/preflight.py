"""Checks that need the model or the data, run by ``train()`` before the run folder exists.

``rosa.config.validate`` checks the command line alone (it also runs on a SLURM login node). What
only the machine that trains can know is checked here, cheaply, so that a bad value still stops
with one line and exit status 2 and leaves no run folder behind:

- the device exists (``device=cuda`` on a machine without CUDA);
- the model source is readable (a folder, its ``config.json``, a GGUF file; GGUF converts here) and,
  with ``model.chat_template=true``, its tokenizer has a template;
- the method fits the model: the model is built on the ``meta`` device (shapes, no weights), so
  ``fnmodel.target_modules`` must match a linear layer and ranks must fit the layers' shapes
  (``Method.check_layers``; rosa-robust also reads and checks ``fnmodel.mask_path``), and the
  method can run on the device (``Method.check_device``: rosa-robust's ``fnmodel.impl``);
- every split the run reads loads (files present, readable, decodable, with valid rows);
- an unfinished run in the same folder was started with the same training settings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rosa.config import ConfigError, RunConfig, validate
from rosa.runs import flat_keys, run_identity

log = logging.getLogger("rosa")


class PreflightError(ValueError):
    """A value that does not fit this machine, model or data; ``str(err)`` is one line."""


def preflight(run: RunConfig, run_dir: Path) -> None:
    """Raise PreflightError (one line) for anything that would fail after the run folder exists."""
    from rosa.data import DataError
    from rosa.models import ModelSourceError

    check_device(run.device)
    try:
        shapes = target_layer_shapes(run)
        check_data(run)
    except (ModelSourceError, DataError) as err:
        raise PreflightError(str(err)) from None
    from rosa.methods import get_method
    from rosa.models import resolve_device

    method = get_method(run.fnmodel, seed=run.seed)
    try:
        method.check_device(resolve_device(run.device))
        if shapes is not None:
            method.check_layers(shapes)
    except ValueError as err:
        raise PreflightError(str(err)) from None
    check_same_settings(run, run_dir)


def check_device(device: str) -> None:
    if device == "auto" or device == "cpu":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        have = f"{count} CUDA device(s)" if count else "no CUDA (torch.cuda.is_available() is false)"
        raise PreflightError(
            f"device={device!r} is not available on this machine ({have}); allowed: auto, cpu"
            + (f" or cuda:0..cuda:{count - 1}" if count else "")
        )


def target_layer_shapes(run: RunConfig) -> dict[str, tuple[int, int]] | None:
    """(out, in) of every layer ``fnmodel.target_modules`` selects, from a weightless model; None
    for a method without target_modules (fft, peft: PEFT checks its own)."""
    from rosa.methods.base import find_target_modules, linear_shape
    from rosa.models import ModelSourceError, load_tokenizer, model_source

    model_source(run.model)  # a missing or unreadable model; GGUF converts here
    if run.model.chat_template:  # the tokenizer must have one
        load_tokenizer(run.model)
    try:
        model = meta_model(run.model)
    except (OSError, ValueError, KeyError) as err:  # a config.json transformers cannot read
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ModelSourceError(
            f"model.name={run.model.name}: its config cannot be read ({type(err).__name__}: "
            f"{reason}); allowed: a causal LM that transformers knows"
        ) from None
    target_modules = getattr(run.fnmodel, "target_modules", None)
    if target_modules is None:
        return None
    try:
        names = find_target_modules(model, target_modules)
    except ValueError as err:
        raise PreflightError(str(err)) from None
    return {name: linear_shape(model.get_submodule(name)) for name in names}


def meta_model(model_cfg) -> torch.nn.Module:
    """The model's structure on the ``meta`` device: every shape, no memory, nothing read but config.json."""
    from rosa.models import model_source
    from rosa.models.tiny import tiny_model, tiny_tokenizer

    with torch.device("meta"):
        if model_cfg.name == "tiny":
            return tiny_model(tiny_tokenizer())
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(
            model_source(model_cfg),
            revision=model_cfg.revision,
            cache_dir=model_cfg.cache,
            trust_remote_code=model_cfg.trust_remote_code,
        )
        return AutoModelForCausalLM.from_config(config, trust_remote_code=model_cfg.trust_remote_code)


def check_data(run: RunConfig) -> None:
    """Load every split the run reads (train, validation, and the evaluation split at the end)."""
    from rosa.data import load_examples

    splits = ["train", "validation"] + ([run.eval.split] if run.train.eval_at_end else [])
    for split in dict.fromkeys(splits):
        load_examples(run.dataset, split)


def check_same_settings(run: RunConfig, run_dir: Path) -> None:
    """Refuse to resume an unfinished run whose stored config.yaml trains differently.

    The folder name holds a hash of the run identity, so this only fires when the stored settings
    were not hashed the way they are now (a folder from an older version, an edited config.yaml, a
    hash collision); resuming would then mix two trainings. An unreadable config.yaml is left to the
    resume code."""
    import yaml

    stored_path = Path(run_dir) / "config.yaml"
    if not stored_path.is_file():
        return
    try:
        stored = validate(yaml.safe_load(stored_path.read_text(encoding="utf-8")))
    except (ConfigError, yaml.YAMLError, UnicodeDecodeError, TypeError, AttributeError) as err:
        log.warning("%s: cannot compare with the stored settings (%s)", stored_path, err)
        return
    before, now = flat_keys(run_identity(stored)), flat_keys(run_identity(run))
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        diff = ", ".join(f"{k}={before.get(k)!r} there, {now.get(k)!r} now" for k in changed[:4])
        raise PreflightError(
            f"run folder {run_dir} holds an unfinished run with other training settings ({diff}"
            f"{', ...' if len(changed) > 4 else ''}); allowed: the same settings to resume it, "
            "or another output.name or output.path for a new run"
        )
