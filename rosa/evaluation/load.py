"""Rebuild a finished run's model for evaluation: base model + the run's adapter, merged if possible.

The run's own ``config.yaml`` (the resolved Hydra config that trained it) is validated again,
the tokenizer and base model are loaded as in training (same precision), the method prepares the
model exactly as training did, and ``<run>/adapter`` (the final adapter, ``checkpoint="last"``) or
``<run>/best`` (``checkpoint="best"``: the best one of ``train.keep_best``) is loaded into it. Then the adapter is folded
into the base weights when the method allows it (``Method.mergeable``), since a merged model
generates faster; otherwise the model runs unmerged and ``LoadedRun.merge_note`` says why. On a
4-bit (NF4) base, merging dequantises each adapted weight, adds the adapter's change and keeps the
result in bf16 (the RoSA code could not merge there and evaluated unmerged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rosa import atomic
from rosa.config import RunConfig, validate
from rosa.methods import Method, build_model
from rosa.methods.base import AdaptedLayer
from rosa.models import resolve_device, resolve_precision, set_threads
from rosa.models.quantize import dequantize_model
from rosa.runs import BEST_ADAPTER, FINAL_RECORD

log = logging.getLogger("rosa")


class EvalError(RuntimeError):
    """A run that cannot be evaluated; the message is one line."""


@dataclass
class LoadedRun:
    run: RunConfig
    model: torch.nn.Module
    tokenizer: object
    method: Method
    device: torch.device
    precision: dict
    merged: bool
    merge_note: str  # why the model is unmerged ("" when merged)


def read_run_config(run_dir: Path) -> RunConfig:
    from omegaconf import OmegaConf

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise EvalError(f"{path} is missing")
    return validate(OmegaConf.load(path))


def load_run(
    run_dir: Path, device: str | None = None, merge: bool | None = None, checkpoint: str = "last"
) -> LoadedRun:
    run_dir = Path(run_dir)
    run = read_run_config(run_dir)
    adapter = run_dir / (BEST_ADAPTER if checkpoint == "best" else FINAL_RECORD.parent)
    if checkpoint == "best" and not adapter.is_dir():
        raise EvalError(
            f"{adapter} does not exist: the run kept no best adapter (train.keep_best={run.train.keep_best}); "
            "allowed: --checkpoint last, or train.keep_best set when training"
        )
    if not (adapter / "adapter.json").exists():
        raise EvalError(f"{adapter} holds no adapter.json (was the run saved?)")
    try:  # a truncated file is named before any model is loaded
        atomic.check_safetensors(adapter / "adapter.safetensors")
    except (OSError, ValueError) as err:
        raise EvalError(
            f"{adapter / 'adapter.safetensors'} is unreadable ({type(err).__name__}: {err})".splitlines()[0]
        ) from err
    dev = resolve_device(device or run.device)
    precision = resolve_precision(run.precision, dev)
    merge = run.eval.merge if merge is None else merge

    torch.manual_seed(run.seed)
    set_threads(run.threads)
    model, tokenizer, method = build_model(run, dev, precision)  # as training built it
    try:
        method.load_adapter(model, adapter)
    except Exception as err:
        raise EvalError(f"cannot load {adapter}: {type(err).__name__}: {err}".splitlines()[0]) from err
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()

    note = ""
    if not merge:
        note = "merging off (--no-merge or eval.merge=false)"
    elif not method.mergeable:
        note = f"method {method.name} cannot be merged"
    else:
        try:
            model = method.merge(model)
        except Exception as err:  # a half-merged model is unusable: rebuild it unmerged
            log.warning("merge failed (%s: %s); evaluating unmerged", type(err).__name__, err)
            loaded = load_run(run_dir, device, merge=False, checkpoint=checkpoint)
            loaded.merge_note = f"merge failed: {type(err).__name__}: {err}".splitlines()[0]
            return loaded
    return LoadedRun(run, model, tokenizer, method, dev, precision, merged=not note, merge_note=note)


def save_merged(model: nn.Module, tokenizer, directory, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Save a merged model (``Method.merge`` done: no adapter layers left) as a standard HF checkpoint
    that ``AutoModelForCausalLM.from_pretrained`` loads (``eval.py <run> --export-merged DIR``). Any NF4
    weight left (layers that were not adapted) is dequantised first; everything is saved in ``dtype``.
    Written into ``DIR.tmp`` and renamed: a kill leaves no half-written ``DIR``."""
    leftover = [n for n, m in model.named_modules() if isinstance(m, AdaptedLayer)]
    if leftover:
        raise ValueError(
            f"save_merged needs a merged model; {len(leftover)} adapter layers remain "
            f"(e.g. {leftover[0]}): call method.merge(model) first"
        )
    dequantize_model(model, dtype)
    model.to(dtype)

    def write(folder: Path) -> None:
        model.save_pretrained(str(folder), safe_serialization=True)
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(str(folder))

    atomic.replace_dir(directory, write, needed_bytes=atomic.tensor_bytes(model.state_dict()))
    return Path(directory)
