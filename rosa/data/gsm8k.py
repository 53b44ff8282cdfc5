"""GSM8k (Grade School Math 8K), config ``main``: word problems -> worked solutions.

Source: Cobbe et al. 2021, github.com/openai/grade-school-math; HF ``gsm8k`` / ``main`` (fields
``question``, ``answer``, same names). Local files (JSON Lines): ``train.jsonl`` 7,473 rows,
``test.jsonl`` 1,319. Solutions carry calculator annotations ``<<48/2=24>>`` and end with
``#### <number>`` (the gold value; metrics strip commas).

Prompt: ``"Question: {question}\\nAnswer:"``, target = the solution after one space, for both
training and evaluation. This is the lm-eval zero-shot prompt RoSA evaluated with; the RoSA code
*trained* on the raw question (no template), a train/eval mismatch not reproduced here.
Decoding: greedy, at most 256 new tokens, stop at ``"Question:"``, ``"</s>"`` or ``"<|im_end|>"``:
the ``until`` list of lm-eval's current ``gsm8k.yaml`` (v3). The v2 list also stopped at a blank line
(``"\\n\\n"``), which cut away an answer written after one; the lm-eval RoSA ran stopped at ``":"``
too (docs/deviations.md). Headline metric: ``exact_match_strict`` (the ``#### N`` value).

Validation: GSM8k has none. The default ``splits.validation: carve:train`` holds out
``carve_rows`` = 500 rows of ``train`` (a fixed-seed permutation, see ``loading.py``) and
``train`` then loads the other 6,973. With ``splits.validation`` set to another split (e.g.
``test``) or null, nothing is carved and ``train`` loads all 7,473 rows.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from rosa.data.readers import read_json_records
from rosa.data.schema import DatasetSpec, RawRow


def render_prompt(row: Mapping[str, Any]) -> str:
    return f"Question: {row['question']}\nAnswer:"


def target(row: Mapping[str, Any]) -> str:
    return row["answer"]


# --- sample data: templated arithmetic word problems with worked answers ---

_NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis", "Tina", "Mark"]
_THINGS = ["apples", "pencils", "stickers", "cookies", "marbles", "books"]


def _step(rng: random.Random, left: str, result: int) -> str:
    """One calculation, sometimes with a GSM8k calculator annotation."""
    return f"{left} = <<{left.replace(' ', '')}={result}>>{result}" if rng.random() < 0.5 else f"{left} = {result}"


def _problem(rng: random.Random) -> RawRow:
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b, c = rng.randint(2, 20), rng.randint(2, 9), rng.randint(2, 12)
    kind = rng.randrange(3)
    if kind == 0:
        question = (
            f"{name} has {a} {thing}. {name} buys {b} bags with {c} {thing} in each bag. "
            f"How many {thing} does {name} have now?"
        )
        lines = [
            f"{name} buys {_step(rng, f'{b} * {c}', b * c)} {thing}.",
            f"{name} has {_step(rng, f'{a} + {b * c}', a + b * c)} {thing} now.",
        ]
        total = a + b * c
    elif kind == 1:
        question = f"{name} reads {c} pages every day for {b} days. How many pages does {name} read?"
        lines = [f"{name} reads {_step(rng, f'{c} * {b}', b * c)} pages."]
        total = b * c
    else:
        start = a + b * c
        question = f"{name} had {start} {thing} and gave {c} {thing} to each of {b} friends. How many {thing} are left?"
        lines = [
            f"{name} gave away {_step(rng, f'{b} * {c}', b * c)} {thing}.",
            f"{name} has {_step(rng, f'{start} - {b * c}', a)} {thing} left.",
        ]
        total = a
    return {"question": question, "answer": "\n".join(lines + [f"#### {total}"])}


def sample(split: str, n: int, seed: int) -> list[RawRow]:
    rng = random.Random(f"gsm8k:{split}:{seed}")
    return [_problem(rng) for _ in range(n)]


SPEC = DatasetSpec(
    name="gsm8k",
    hub_id="gsm8k",
    hub_config="main",
    fields=("question", "answer"),
    hub_fields={"question": "question", "answer": "answer"},
    local_files={"train": "train.jsonl", "test": "test.jsonl"},
    default_splits={"train": "train", "validation": "carve:train", "test": "test"},
    eval_kind="generation",
    headline_metric="exact_match_strict",
    render_prompt=render_prompt,
    target=target,
    read_local=read_json_records,
    sample=sample,
    separator=" ",
    stop_strings=["Question:", "</s>", "<|im_end|>"],  # lm-eval gsm8k.yaml v3 (v2 also had "\n\n")
    max_new_tokens=256,
    decoding={"num_beams": 1, "do_sample": False},
    carve_rows=500,
)
