"""ELI5 (language modelling on answers), as used by ROSA (Hameed et al.).

Source: ELI5-Category (Gao, Zhou & Qiu 2021), HF ``eli5_category``: splits ``train`` 91,772
questions, ``validation1`` 5,446, ``validation2`` 2,375, ``test`` 5,411. ROSA used the older HF
``eli5`` (``train_asks``/``validation_asks``), which is no longer available; ELI5-Category rows have
the same core layout (``q_id``, ``title``, ``selftext``, ``answers{a_id, text, score}``).
Local files: ``eli5-category-{train,validation-1,validation-2,test}.json.gz``, each a gzip of
ONE JSON array; split values ``train``, ``validation1``, ``validation2``, ``test`` name them.
The shared offline copy has only ``test`` and ``validation-2``, so choose which file serves as
train/validation with ``dataset.splits`` (e.g. ``{train: test, validation: validation2,
test: validation2}``); a missing file is a DataError naming it.

Text (ROSA): one document per question, its answers' texts joined with a space (no question).
``build_train_features`` tokenizes the documents (each followed by EOS, a separator ROSA did
not add), concatenates them and cuts fixed 128-token blocks, labels = inputs; the last partial
block is dropped and counted. ``max_length`` is not used. Headline metric: validation perplexity.

Metrics (``METRICS``, headline first): ``ppl``, ``bits_per_token`` and ``loss`` (the mean token
negative log-likelihood in nats that the evaluator computes over the split's blocks, see
:func:`rosa.metrics.perplexity.lm_metrics`), and ``rouge_l`` of generated answers, only when
evaluation is asked to generate (:func:`score`; the prompt is the question title).
``rouge_l`` is the COCO-style ROUGE-L F (beta 1.2, max precision and max recall over the
references, mean over examples) on PTB-style, lower-cased, punctuation-free tokens -- the same
definition as the E2E ROUGE-L.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from rosa.data.readers import read_json_gz_array
from rosa.data.spec import DatasetSpec, RawRow
from rosa.metrics.perplexity import LM_METRICS
from rosa.metrics.rouge import rouge_l_corpus
from rosa.metrics.tokenizers import ptb_tokenize

BLOCK_SIZE = 128


def render_prompt(row: Mapping[str, Any]) -> str:
    return ""


def target(row: Mapping[str, Any]) -> str:
    texts = row["answers"]["text"]
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise TypeError("answers.text is not a list of strings")
    return " ".join(text.strip() for text in texts if text.strip())


# --- scoring: the loss (headline: perplexity), and ROUGE-L of generated answers (evaluation's --generate) ---

METRICS = (*LM_METRICS, "rouge_l")


def score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    pred_tok = [ptb_tokenize(p.strip()) for p in predictions]
    ref_tok = [[ptb_tokenize(r.strip()) for r in refs] for refs in references]
    return {"rouge_l": float(rouge_l_corpus(pred_tok, ref_tok))}


def postprocess(text: str) -> str:
    return text.strip()


# --- sample data: templated explanations, 1-3 answers per question ---

_TOPICS = [
    ("the sky", "blue", "air scatters blue light more than red light"),
    ("ice", "slippery", "a thin layer of water forms on its surface"),
    ("bread", "soft", "yeast fills the dough with small bubbles of gas"),
    ("metal", "cold to the touch", "it moves heat away from your hand quickly"),
    ("the sea", "salty", "rivers carry minerals into it and the water evaporates"),
    ("a magnet", "sticky to iron", "its tiny domains all point the same way"),
]


def _answer(rng: random.Random, subject: str, quality: str, reason: str) -> str:
    opener = rng.choice(["Basically,", "Simply put,", "In short,"])
    return f"{opener} {subject} is {quality} because {reason}. That is why {subject} is {quality}."


def sample(split: str, n: int, seed: int) -> list[RawRow]:
    rng = random.Random(f"eli5:{split}:{seed}")
    rows = []
    for index in range(n):
        subject, quality, reason = rng.choice(_TOPICS)
        texts = [_answer(rng, subject, quality, reason) for _ in range(rng.randint(1, 3))]
        rows.append(
            {
                "q_id": f"sample{index}",
                "title": f"Why is {subject} {quality}?",
                "selftext": "",
                "category": "Sample",
                "subreddit": "explainlikeimfive",
                "answers": {
                    "a_id": [f"a{index}_{k}" for k in range(len(texts))],
                    "text": texts,
                    "score": [len(texts) - k for k in range(len(texts))],
                },
            }
        )
    return rows


SPEC = DatasetSpec(
    name="eli5",
    hub_id="eli5_category",
    hub_config=None,
    fields=("answers",),
    hub_fields={"answers": "answers"},
    local_files={
        "train": "eli5-category-train.json.gz",
        "validation1": "eli5-category-validation-1.json.gz",
        "validation2": "eli5-category-validation-2.json.gz",
        "test": "eli5-category-test.json.gz",
    },
    default_splits={"train": "train", "validation": "validation1", "test": "test"},
    eval_kind="lm",
    metrics=METRICS,
    score=score,
    postprocess=postprocess,
    render_prompt=render_prompt,
    target=target,
    read_local=read_json_gz_array,
    sample=sample,
    separator="",
    stop_strings=[],
    max_new_tokens=0,
    decoding={},
    block_size=BLOCK_SIZE,
)
