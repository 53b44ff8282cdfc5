"""SQL generation (sql-create-context): a table schema and a question -> a SQL query.

Source: HF ``b-mc2/sql-create-context`` (fields ``question``, ``context``, ``answer``; one
``train`` split of 78,577 rows; data file ``sql_create_context_v4.json``, a JSON array). No
offline copy is shared. Local source: ``dataset.path`` holds ``sql_create_context_v4.json`` (a
JSON array or JSON Lines of ``{question, context, answer}``); a split value that is not
``train`` is read as a file name in that directory.

Splits: the single source split is carved (``splits: {train: train, validation: carve:train,
test: carve:train}``): a fixed-seed permutation of the rows gives test the first
``min(1000, max(1, n // 10))`` rows, validation the next as many, and train keeps the rest in file
order. For the full 78,577 rows: train 76,577, validation 1,000, test 1,000 (RoSA's own
``valid.jsonl`` had 1,000 lines; its train file is not public).

Prompt: RoSA's chat content plus its training suffix (``finetune_example/preprocessing.py``):
``"Write a SQL query to answer the question based on the table schema.\\n\\n context: {context}
\\n\\n question: {question}\\n\\n answer:"``, then one space and the query (``separator = " "``),
so training text = RoSA's ``content + "\\n\\n answer: " + query``. RoSA's eval applied the suffix
twice (``... answer: \\n\\n answer: ``); that quirk is not reproduced: train and eval share one
prompt. Greedy decoding; headline metric ``exact_match`` on the ``SELECT ...`` line.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from rosa.data.readers import read_json_records
from rosa.data.schema import DatasetSpec, RawRow


def render_prompt(row: Mapping[str, Any]) -> str:
    return (
        "Write a SQL query to answer the question based on the table schema.\n\n"
        f" context: {row['context']}\n\n question: {row['question']}\n\n answer:"
    )


def target(row: Mapping[str, Any]) -> str:
    return row["answer"]


# --- sample data: CREATE TABLE contexts with templated questions and queries ---

_TABLES = {
    "employee": (["name", "department", "city"], "salary"),
    "team": (["coach", "city", "league"], "wins"),
    "book": (["title", "author", "publisher"], "pages"),
    "station": (["name", "line", "district"], "passengers"),
}
_VALUES = ["Paris", "Smith", "North", "Blue", "Central", "Oxford", "Lee", "Green"]


def _query(rng: random.Random) -> RawRow:
    table = rng.choice(sorted(_TABLES))
    text_columns, number_column = _TABLES[table]
    context = f"CREATE TABLE {table} ({', '.join(f'{c} VARCHAR' for c in text_columns)}, {number_column} INTEGER)"
    wanted, where = rng.sample(text_columns, 2)
    value, number = rng.choice(_VALUES), rng.randint(1, 500)
    kind = rng.randrange(3)
    if kind == 0:
        question = f"What is the {wanted} of the {table} whose {where} is {value}?"
        answer = f'SELECT {wanted} FROM {table} WHERE {where} = "{value}"'
    elif kind == 1:
        question = f"How many {table} rows have {number_column} greater than {number}?"
        answer = f"SELECT COUNT(*) FROM {table} WHERE {number_column} > {number}"
    else:
        question = f"What is the highest {number_column} of a {table} with {where} {value}?"
        answer = f'SELECT MAX({number_column}) FROM {table} WHERE {where} = "{value}"'
    return {"question": question, "context": context, "answer": answer}


def sample(split: str, n: int, seed: int) -> list[RawRow]:
    rng = random.Random(f"sql:{split}:{seed}")
    return [_query(rng) for _ in range(n)]


SPEC = DatasetSpec(
    name="sql",
    hub_id="b-mc2/sql-create-context",
    hub_config=None,
    fields=("question", "context", "answer"),
    hub_fields={"question": "question", "context": "context", "answer": "answer"},
    local_files={"train": "sql_create_context_v4.json"},
    default_splits={"train": "train", "validation": "carve:train", "test": "carve:train"},
    eval_kind="generation",
    headline_metric="exact_match",
    render_prompt=render_prompt,
    target=target,
    read_local=read_json_records,
    sample=sample,
    separator=" ",
    stop_strings=["\n"],
    max_new_tokens=256,
    decoding={"num_beams": 1, "do_sample": False},
    carve_rows=1000,
)
