"""Model and tokenizer loading: the built-in tiny model, any HF causal LM (hub id or folder), or
GGUF weights (a ``.gguf`` file or a bundled name such as ``smollm2-135m``; see ``gguf.py``).

``trust_remote_code`` is off unless ``model.trust_remote_code=true``. A pad token is always set
(EOS when the tokenizer has none) and padding is on the left, as batched generation needs.
``model.chat_template=true`` marks the tokenizer so that prompts are rendered with its chat
template (``rosa.data.features.render_prompts``); by default the papers' plain prompts are used.
Frozen weights are stored in ``precision.base_dtype``; the method decides what trains.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import torch

from rosa.models.gguf import ModelSourceError, gguf_file_for, resolve_gguf
from rosa.models.tiny import tiny_model, tiny_tokenizer
from rosa.schema import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=8)
def _source(name: str, cache: str | None) -> str:
    gguf = gguf_file_for(name)
    if gguf is not None:
        return str(resolve_gguf(gguf, cache))
    path = Path(name)
    looks_local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise ModelSourceError(
                f"model.name={name}: no such folder; allowed: tiny, a preset (model=...), "
                "an HF hub id, a folder with config.json, or a .gguf file"
            )
        config = path / "config.json"
        if not config.exists():
            raise ModelSourceError(
                f"model.name={name}: the folder holds no config.json and no .gguf file; "
                "allowed: a saved HF model folder or a .gguf file"
            )
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ModelSourceError(f"model.name={name}: {config} is not valid JSON ({err})") from None
    return name


def model_source(model_cfg) -> str:
    """What transformers loads for ``model_cfg``: the HF id or folder, or the converted GGUF folder.
    Raises ModelSourceError (one line) for a missing or unreadable source; cheap after the first call."""
    if model_cfg.name == "tiny":
        return "tiny"
    return _source(model_cfg.name, model_cfg.cache)


def model_config(model_cfg):
    """The transformers config of ``model_cfg``; ModelSourceError (one line) when it cannot be read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            model_source(model_cfg),
            revision=model_cfg.revision,
            cache_dir=model_cfg.cache,
            trust_remote_code=model_cfg.trust_remote_code,
        )
    except (OSError, ValueError, KeyError) as err:  # a config.json transformers cannot read
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ModelSourceError(
            f"model.name={model_cfg.name}: its config cannot be read ({type(err).__name__}: "
            f"{reason}); allowed: a causal LM that transformers knows"
        ) from None


def load_tokenizer(model_cfg):
    if model_cfg.name == "tiny":
        return tiny_tokenizer()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_source(model_cfg),
            revision=model_cfg.revision,
            cache_dir=model_cfg.cache,
            trust_remote_code=model_cfg.trust_remote_code,
        )
    except (OSError, ValueError, KeyError) as err:
        model_config(model_cfg)  # an unreadable config is the cause to name
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ModelSourceError(
            f"model.name={model_cfg.name}: its tokenizer cannot be read ({type(err).__name__}: {reason}); "
            "allowed: a model folder or hub id with tokenizer files"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if getattr(model_cfg, "chat_template", False):
        if not tokenizer.chat_template:
            raise ModelSourceError(
                f"model.chat_template=true: the tokenizer of {model_cfg.name} has no chat "
                "template; allowed: false for this model"
            )
        tokenizer.use_chat_template = True  # read by rosa.data.features.render_prompts
    return tokenizer


def load_model(
    model_cfg,
    tokenizer,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    quantize: str | None = None,
):
    """The pretrained model in ``dtype`` on ``device``, in eval mode, all parameters frozen.
    ``quantize="nf4"`` stores the decoder's linear weights in 4 bits (``rosa.models.quantize``)."""
    if model_cfg.name == "tiny":
        model = tiny_model(tokenizer).to(dtype)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            model_source(model_cfg),
            config=model_config(model_cfg),
            revision=model_cfg.revision,
            cache_dir=model_cfg.cache,
            dtype=dtype,
            trust_remote_code=model_cfg.trust_remote_code,
        )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model_cfg, "gradient_checkpointing", False):
        model.gradient_checkpointing_enable()
    for p in model.parameters():
        p.requires_grad_(False)
    model = model.to(device)
    if quantize == "nf4":
        from rosa.models.quantize import quantize_model

        quantize_model(model)
    return model


def set_threads(threads: int | None) -> int:
    """CPU threads for torch's kernels (``threads``; None keeps torch's default, one per core).
    On a shared or busy machine fewer threads than cores is often faster. Returns the count in use."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def resolve_device(name: str) -> torch.device:
    """``device`` as a torch device; ConfigError (one line) for a CUDA device this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name != "cpu" and int(name.partition(":")[2] or 0) >= count:
        have = f"{count} CUDA device(s)" if count else "no CUDA (torch.cuda.is_available() is false)"
        raise ConfigError(
            f"device={name!r} is not available on this machine ({have}); allowed: auto, cpu"
            + (f" or cuda:0..cuda:{count - 1}" if count else "")
        )
    return torch.device(name)


def resolve_precision(precision_cfg, device: torch.device) -> dict:
    """Concrete dtypes for ``precision=auto`` and friends: bf16 on a bf16-capable GPU, else fp32."""
    gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    name = precision_cfg.name
    if name == "auto":
        name = "bf16" if gpu_bf16 else "fp32"
    base = precision_cfg.base_dtype
    if base == "auto":
        base = {"bf16": "bf16", "fp16": "fp16", "nf4": "bf16"}.get(name, "fp32")
    autocast = precision_cfg.autocast
    if autocast == "auto":
        autocast = {"bf16": "bf16", "fp16": "fp16", "nf4": "bf16"}.get(name, "none")
    return {
        "name": name,
        "base_dtype": DTYPES[base],
        "param_dtype": DTYPES[precision_cfg.param_dtype],
        "autocast": None if autocast == "none" else DTYPES[autocast],
    }
