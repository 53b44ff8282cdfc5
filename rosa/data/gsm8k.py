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

Metrics (``METRICS``, headline first; :func:`score`): exact match after the two answer filters of
lm-evaluation-harness (``gsm8k.yaml`` v3).

* ``strict``: the first match of ``#### (\\-?[0-9\\.\\,]+)`` (group 1);
* ``flexible``: the last match of ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` (its non-empty group).

No match gives ``"[invalid]"`` (never correct).  Before comparing, both the extracted answer and
the whole reference answer (the gold) are normalised as lm-eval's ``exact_match`` with the task's
``regexes_to_ignore`` and ``ignore_case``: ``,`` and ``$`` removed, anything up to the last ``"#### "``
removed, one trailing ``.`` removed, lower-cased; nothing is stripped, so a reference whose
``####`` has no space after it, or with whitespace after the number, matches no answer (as in lm-eval;
no GSM8k row has either). Scores are fractions in 0-1. ``tests/evaluation/test_lm_eval.py`` checks
both filters against lm-eval's own pipeline, answer by answer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rosa.data.readers import read_json_records
from rosa.data.spec import DatasetSpec, RawRow


def render_prompt(row: Mapping[str, Any]) -> str:
    return f"Question: {row['question']}\nAnswer:"


def target(row: Mapping[str, Any]) -> str:
    return row["answer"]


# --- scoring: lm-eval's two answer filters ---

METRICS = ("exact_match_strict", "exact_match_flexible")
INVALID = "[invalid]"
_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = tuple(re.compile(p) for p in (r",", r"\$", r"(?s).*#### ", r"\.$"))
_STOP = "Question:"


def extract_strict(text: str) -> str:
    found = _STRICT.findall(text)
    return found[0].strip() if found else INVALID


def extract_flexible(text: str) -> str:
    found = _FLEXIBLE.findall(text)
    if not found:
        return INVALID
    groups = [g for g in found[-1] if g]
    return groups[0].strip() if groups else INVALID


def normalize(answer: str) -> str:
    for pattern in _IGNORE:
        answer = pattern.sub("", answer)
    return answer.lower()


def score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    strict = flexible = 0
    for pred, refs in zip(predictions, references, strict=True):
        golds = {normalize(r) for r in refs}
        strict += normalize(extract_strict(pred)) in golds
        flexible += normalize(extract_flexible(pred)) in golds
    n = len(predictions)
    return {"exact_match_strict": strict / n, "exact_match_flexible": flexible / n}


def postprocess(text: str) -> str:
    """Cut at the first ``Question:`` (lm-eval's stop sequence); extraction happens in :func:`score`."""
    return text.split(_STOP, 1)[0].strip()


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
    metrics=METRICS,
    score=score,
    postprocess=postprocess,
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
