"""Examples -> token features for training, and the batch collator.

Generation datasets (one feature per example):
  input_ids = [bos] + prompt ids + target ids + [eos]   ([bos] only where the tokenizer adds one itself:
              it has a BOS id and does not say ``add_bos_token = False``, as SmolLM2's and GPT-2's do)
  labels    = -100 over [bos] + prompt when ``loss_on == "target"`` (RoSA), the ids when "all" (ROSA).
The tokenizer adds no special tokens (``add_special_tokens=False``). Target ids are the tokens
of ``prompt + spec.separator + target`` after the prompt's own tokens, so the boundary is
tokenized as it is when a model generates after the prompt (``prompt_ids`` gives the eval side
the same prompt ids). With ``model.chat_template=true`` each prompt is first rendered as one user
turn of the tokenizer's chat template, ending with the assistant's turn opener (``render_prompts``),
and the separator is dropped. If the prompt's tokens are not a prefix of the joint tokens (a merge across
the boundary), ``separator + target`` is tokenized alone and counted (``boundary_fallbacks``).
A prompt of ``max_length`` tokens or more skips the example (as llm-foundry does); a longer
sequence is cut to ``max_length`` on the target side, EOS included; both are counted.

Language modelling (``spec.eval_kind == "lm"``, ELI5 as in ROSA): every text is tokenized, followed
by EOS, concatenated, and cut into ``spec.block_size`` blocks with labels = input_ids; the last
partial block is dropped and its tokens counted. ``max_length`` and ``loss_on`` do not apply.
"""

from __future__ import annotations

from typing import Any

import torch

from rosa.data.spec import DataError, DatasetSpec, Example, FeatureStats

IGNORE_INDEX = -100
#: The smallest ``dataset.max_length`` (generation datasets): the one limit, which the configuration check uses too.
MIN_MAX_LENGTH = 8
LOSS_ON = ("target", "all")
TOKENIZE_BATCH = 1024


def tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens, in batches."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_BATCH):
        ids += tokenizer(texts[start : start + TOKENIZE_BATCH], add_special_tokens=False)["input_ids"]
    return ids


def uses_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "use_chat_template", False))  # set by rosa.models.load_tokenizer


def bos_ids(tokenizer: Any) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None or getattr(tokenizer, "add_bos_token", True) is False or uses_chat_template(tokenizer):
        return []
    return [bos]


def render_prompts(tokenizer: Any, prompts: list[str]) -> list[str]:
    """The prompts as the model reads them: unchanged, or as a chat turn when the tokenizer is marked."""
    if not uses_chat_template(tokenizer):
        return list(prompts)
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        for prompt in prompts
    ]


def prompt_ids(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """The ids a model sees before its response, identical in training and evaluation."""
    return [bos_ids(tokenizer) + ids for ids in tokenize(tokenizer, render_prompts(tokenizer, prompts))]


def build_train_features(
    examples: list[Example], tokenizer: Any, spec: DatasetSpec, max_length: int, loss_on: str = "target"
) -> tuple[list[dict], FeatureStats]:
    if loss_on not in LOSS_ON:
        raise DataError(f"loss_on: {loss_on!r}; allowed: {', '.join(LOSS_ON)}")
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise DataError(f"tokenizer {type(tokenizer).__name__}: eos_token_id is None; an EOS token is required")
    if spec.eval_kind == "lm":
        return _lm_blocks(examples, tokenizer, spec, eos)
    if not isinstance(max_length, int) or max_length < MIN_MAX_LENGTH:
        raise DataError(f"dataset.max_length: {max_length!r}; allowed: an integer >= {MIN_MAX_LENGTH}")

    stats = FeatureStats(examples=len(examples))
    prompts = prompt_ids(tokenizer, [example.prompt for example in examples])
    separator = "" if uses_chat_template(tokenizer) else spec.separator
    rendered = render_prompts(tokenizer, [example.prompt for example in examples])
    joint = tokenize(tokenizer, [prompt + separator + example.target for prompt, example in zip(rendered, examples)])
    targets: list[list[int] | None] = []
    for prompt, ids in zip(prompts, joint, strict=True):
        prompt_only = prompt[len(bos_ids(tokenizer)) :]
        targets.append(ids[len(prompt_only) :] if ids[: len(prompt_only)] == prompt_only else None)
    fallback = [index for index, ids in enumerate(targets) if ids is None]
    for index, ids in zip(
        fallback, tokenize(tokenizer, [separator + examples[i].target for i in fallback]), strict=True
    ):
        targets[index] = ids
    stats.boundary_fallbacks = len(fallback)

    features = []
    for prompt, target in zip(prompts, targets, strict=True):
        if len(prompt) >= max_length:
            stats.skipped_long_prompt += 1
            continue
        ids = prompt + target + [eos]
        if len(ids) > max_length:
            ids = ids[:max_length]
            stats.truncated += 1
        labels = [IGNORE_INDEX] * len(prompt) + ids[len(prompt) :] if loss_on == "target" else list(ids)
        features.append({"input_ids": ids, "labels": labels})
        stats.tokens += len(ids)
        stats.label_tokens += sum(label != IGNORE_INDEX for label in labels)
    if not features:
        raise DataError(
            f"dataset.max_length: {max_length}; every {spec.name} prompt has >= {max_length} tokens, no feature left"
        )
    stats.features = len(features)
    return features, stats


def _lm_blocks(examples: list[Example], tokenizer: Any, spec: DatasetSpec, eos: int) -> tuple[list[dict], FeatureStats]:
    block = spec.block_size
    stream: list[int] = []
    for ids in tokenize(tokenizer, [example.target for example in examples]):
        stream += bos_ids(tokenizer) + ids + [eos]
    count = len(stream) // block
    if count == 0:
        raise DataError(
            f"{spec.name}: {len(examples)} texts give {len(stream)} tokens, fewer than one {block}-token block"
        )
    features = [
        {"input_ids": stream[i * block : (i + 1) * block], "labels": stream[i * block : (i + 1) * block]}
        for i in range(count)
    ]
    stats = FeatureStats(
        examples=len(examples),
        features=count,
        tokens=count * block,
        label_tokens=count * block,
        dropped_tail_tokens=len(stream) - count * block,
    )
    return features, stats


def collate_batch(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest feature: input_ids with pad_id, labels with -100, attention_mask 1/0."""
    if not features:
        raise DataError("collate_batch: features is empty; allowed: a list of at least one feature")
    width = max(len(feature["input_ids"]) for feature in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    for row, feature in enumerate(features):
        length = len(feature["input_ids"])
        input_ids[row, :length] = torch.tensor(feature["input_ids"], dtype=torch.long)
        attention_mask[row, :length] = 1
        labels[row, :length] = torch.tensor(feature.get("labels", feature["input_ids"]), dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
