"""Batched generation for evaluation: left padding, KV cache, per-dataset stop strings.

Prompts are tokenized with :func:`rosa.data.features.prompt_ids` (BOS included when the tokenizer
has one), exactly as training saw them, then sorted by length and cut into batches, so little
padding is wasted; outputs come back in the input order. Each batch is padded on the *left* (the
last prompt token of every row sits in the last column, so one decoding step serves every row) and
decoded by HF ``model.generate`` with its KV cache. transformers' ``stop_strings`` ends a row once
its text ends in a stop string (EOS ends it too); the text is then cut at the first stop string.
(A hand-written criterion was replaced: same outputs, same speed, see bench/bench_stop_strings.py.)

Decoding per dataset comes from ``DatasetSpec.decoding`` / ``max_new_tokens`` (E2E: ROSA's beam
search, 5 beams, no repeated 4-gram; the others greedy), overridable per call.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

from rosa.data.features import prompt_ids
from rosa.models.loss import prefix_cache
from rosa.models.shared_prefix import prompts_prefix_length, unsupported_reason

DECODING_KEYS = ("num_beams", "max_new_tokens", "no_repeat_ngram_size", "early_stopping")


def decoding_for(spec, **overrides) -> dict:
    """The decoding settings of a dataset, with the non-None ``overrides`` applied (greedy default)."""
    decoding = {
        "num_beams": 1,
        "max_new_tokens": spec.max_new_tokens,
        "no_repeat_ngram_size": 0,
        "early_stopping": False,
    }
    decoding.update({k: v for k, v in dict(spec.decoding).items() if k in DECODING_KEYS})
    unknown = set(overrides) - set(DECODING_KEYS)
    if unknown:
        raise ValueError(f"unknown decoding setting(s) {sorted(unknown)}; allowed: {', '.join(DECODING_KEYS)}")
    decoding.update({k: v for k, v in overrides.items() if v is not None})
    decoding["stop_strings"] = list(spec.stop_strings)
    return decoding


def cut_at_stop(text: str, stop_strings: list[str]) -> str:
    """``text`` up to (not including) the first occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop_strings if s) if i >= 0), default=len(text))
    return text[:cut]


@dataclass
class GenerationResult:
    texts: list[str]  # generated text of each prompt, cut at the first stop string
    new_tokens: int  # tokens generated in all (padding after a finished row excluded)
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)


def prefix_then_left_pad(rows: list[list[int]], prefix_length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[shared prefix | padding | rest of the prompt]``: the prefix's P columns first (its keys and
    values come from the shared cache), then each row's rest left-padded, so the last prompt token of
    every row is in the last column. The padding is masked out and positions follow the mask (HF
    counts them from its cumulative sum), so each row sees the positions it has without the gap."""
    ids, mask = left_pad([r[prefix_length:] for r in rows], pad_id)
    prefix = torch.tensor(rows[0][:prefix_length], dtype=torch.long).expand(len(rows), -1)
    return torch.cat([prefix, ids], dim=1), torch.cat([torch.ones_like(prefix), mask], dim=1)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    stop_strings: list[str] | None = None,
    num_beams: int = 1,
    no_repeat_ngram_size: int = 0,
    early_stopping: bool = False,
    autocast: torch.dtype | None = None,
    use_cache: bool = True,
    shared_prefix: bool = True,
    progress: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Greedy (``num_beams=1``) or beam-search continuations of ``prompts``, ``batch_size`` at a time.

    ``shared_prefix``: a batch's common prompt prefix (token ids, >= ``MIN_SHARED_PREFIX`` tokens) is
    prefilled once, as batch 1, and its KV cache expanded to every row and beam as a view
    (``rosa.models.shared_prefix``); decoding then goes on as usual. Same outputs up to float rounding."""
    stops = list(stop_strings or [])
    ids = prompt_ids(tokenizer, prompts)
    if any(not r for r in ids):
        raise ValueError("an empty prompt cannot be continued (the tokenizer adds no BOS)")
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    specials = {t for t in (pad_id, tokenizer.eos_token_id) if t is not None}
    texts: list[str] = [""] * len(ids)
    new_tokens = 0
    share = shared_prefix and use_cache and unsupported_reason(model) is None
    model.eval()
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rows = [ids[i] for i in chunk]
        prefix = prompts_prefix_length(rows) if share else 0
        input_ids, mask = prefix_then_left_pad(rows, prefix, pad_id) if prefix else left_pad(rows, pad_id)
        input_ids, mask = input_ids.to(device), mask.to(device)
        width = input_ids.shape[1]
        kwargs = dict(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=num_beams,
            use_cache=use_cache,
            pad_token_id=pad_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=tokenizer)
        if no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = no_repeat_ngram_size
        if num_beams > 1:
            kwargs["early_stopping"] = early_stopping
        context = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()
        with context:
            if prefix:  # one cache row per beam: generate expands the inputs, not a cache it is given
                kwargs["cache"] = prefix_cache(model, input_ids[:1, :prefix], len(chunk) * num_beams)
            out = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        generated = out[:, width:].tolist()
        for i, row in zip(chunk, generated):
            end = next((k for k, t in enumerate(row) if t in specials), len(row))
            new_tokens += min(end + 1, len(row))  # the EOS counts as a generated token
            texts[i] = cut_at_stop(tokenizer.decode(row[:end], skip_special_tokens=True), stops)
        if progress is not None:
            progress(len(chunk))
    return GenerationResult(texts, new_tokens, time.perf_counter() - started)
