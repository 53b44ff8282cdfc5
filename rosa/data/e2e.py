"""E2E NLG Challenge (original release): restaurant meaning representations -> sentences.

Source: Novikova et al., SIGDIAL 2017; github.com/tuetschek/e2e-dataset; HF ``e2e_nlg``
(fields ``meaning_representation``, ``human_reference``). Not ``GEM/e2e_nlg`` (the cleaned data).
Local files (CSV ``mr,ref``, one reference per row, MRs repeat; train/dev use CRLF and a few cells
hold line breaks): ``trainset.csv`` 42,061 rows, ``devset.csv`` 4,672, ``testset_w_refs.csv``
4,693 (630 unique MRs). Evaluation groups the rows of a split by MR (``eval_examples``).

Prompt (ROSA code from @a0257ed): the training text is ``"Input: {mr} Output: {ref}"`` + EOS.
Here ``prompt = "Input: {mr} Output:"`` and the single space before the reference belongs to
the target side (``separator = " "``), so a BPE tokenizer sees `` The`` as it will when the model
generates after the prompt; ROSA's eval prompt ``"Input: {mr} Output: "`` ended in that space.
Decoding as ROSA's eval: beam search, 5 beams, ``no_repeat_ngram_size=4``. ROSA trained on the
whole sequence (prompt included); choose that with ``loss_on="all"``. Headline metric: BLEU.

Metrics: the official E2E scorer's five (``bleu, nist, meteor, rouge_l, cider``, on the scale it
prints), from :mod:`rosa.metrics.e2e`, which re-implements it; without Java, METEOR is NLTK's
approximation, reported as ``meteor_nltk`` (``metric_fallbacks``). What is scored is the first
non-empty line of a generation (:func:`postprocess`; the scorer reads one output per line).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from rosa.data.readers import read_csv_rows
from rosa.data.spec import DatasetSpec, RawRow
from rosa.metrics import e2e as scorer


def render_prompt(row: Mapping[str, Any]) -> str:
    return f"Input: {row['mr']} Output:"


def target(row: Mapping[str, Any]) -> str:
    return row["ref"]


# --- scoring: the official E2E scorer (rosa.metrics.e2e) on one output line ---

METRICS = scorer.METRICS  # bleu, nist, meteor, rouge_l, cider


def postprocess(text: str) -> str:
    """The first non-empty line, stripped (the scorer reads one output per line)."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


# --- sample data: E2E-like MRs, each with 2-3 template references (one row per reference) ---

_NAMES = [
    "The Vaults",
    "Blue Spice",
    "The Mill",
    "Green Man",
    "Alimentum",
    "The Punter",
    "Zizzi",
    "Aromi",
    "The Eagle",
    "Cocum",
    "Giraffe",
    "Loch Fyne",
]
_SLOTS = {
    "eatType": ["restaurant", "pub", "coffee shop"],
    "food": ["Italian", "French", "Chinese", "Indian", "English", "Japanese"],
    "priceRange": ["cheap", "moderate", "high"],
    "customer rating": ["low", "average", "high"],
    "area": ["city centre", "riverside"],
    "familyFriendly": ["yes", "no"],
}


def _facts(slots: dict[str, str]) -> list[str]:
    facts = []
    if "priceRange" in slots:
        facts.append(f"prices are {slots['priceRange']}")
    if "customer rating" in slots:
        facts.append(f"the customer rating is {slots['customer rating']}")
    if "familyFriendly" in slots:
        facts.append("it is family friendly" if slots["familyFriendly"] == "yes" else "it is not family friendly")
    return facts


def _reference(slots: dict[str, str], variant: int) -> str:
    noun = " ".join(slots[key] for key in ("food", "eatType") if key in slots) or "place"
    kind = ("an " if noun[0] in "AEIOUaeiou" else "a ") + noun  # "an Italian pub"
    where = " ".join(
        part
        for part in (
            f"in the {slots['area']}" if "area" in slots else "",
            f"near {slots['near']}" if "near" in slots else "",
        )
        if part
    )
    facts = _facts(slots)
    if variant == 0:
        head = f"{slots['name']} is {kind}" + (f" {where}" if where else "")
        return " ".join([head + "."] + [f"{fact[0].upper()}{fact[1:]}." for fact in facts])
    if variant == 1:
        head = f"There is {kind} called {slots['name']}" + (f" {where}" if where else "")
        return head + (f" and {' and '.join(facts)}." if facts else ".")
    head = (f"{where[0].upper()}{where[1:]}, " if where else "") + f"{slots['name']} is {kind}"
    return head + (f" where {', '.join(facts)}." if facts else ".")


def sample(split: str, n: int, seed: int) -> list[RawRow]:
    rng = random.Random(f"e2e:{split}:{seed}")
    rows: list[RawRow] = []
    while len(rows) < n:
        slots = {"name": rng.choice(_NAMES)}
        for key in rng.sample(sorted(_SLOTS), rng.randint(2, 5)):
            slots[key] = rng.choice(_SLOTS[key])
        if rng.random() < 0.4:
            slots["near"] = rng.choice([name for name in _NAMES if name != slots["name"]])
        order = ["name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near"]
        mr = ", ".join(f"{key}[{slots[key]}]" for key in order if key in slots)
        for variant in rng.sample(range(3), rng.randint(2, 3)):
            rows.append({"mr": mr, "ref": _reference(slots, variant)})
    return rows[:n]


SPEC = DatasetSpec(
    name="e2e",
    hub_id="e2e_nlg",
    hub_config=None,
    fields=("mr", "ref"),
    hub_fields={"mr": "meaning_representation", "ref": "human_reference"},
    local_files={"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"},
    default_splits={"train": "train", "validation": "validation", "test": "test"},
    eval_kind="generation",
    metrics=METRICS,
    score=scorer.score,
    postprocess=postprocess,
    metric_fallbacks=scorer.FALLBACK_NAMES,
    render_prompt=render_prompt,
    target=target,
    read_local=read_csv_rows,
    sample=sample,
    separator=" ",
    stop_strings=["\n"],
    max_new_tokens=128,
    decoding={"num_beams": 5, "no_repeat_ngram_size": 4, "do_sample": False, "early_stopping": True},
)
