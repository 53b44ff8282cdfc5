"""SQL generation (sql-create-context): a table schema and a question -> a SQL query.

Source: HF ``b-mc2/sql-create-context`` (fields ``question``, ``context``, ``answer``; one
``train`` split of 78,577 rows; data file ``sql_create_context_v4.json``, a JSON array). Local
source: ``dataset.path`` holds ``sql_create_context_v4.json`` (a JSON array or JSON Lines of
``{question, context, answer}``) and/or RoSA's evaluation file ``valid.jsonl``; a split value that
is neither ``train`` nor ``rosa-valid`` is read as a file name in that directory. Either record
format is read from any file: sql-create-context rows, or RoSA's chat rows ``{"messages": [{"role":
"user", "content": PROMPT}, {"role": "assistant", "content": SQL}]}`` whose PROMPT is RoSA's
instruction, context and question (:func:`from_chat`).

Splits: by default the single source split is carved (``splits: {train: train, validation:
carve:train, test: carve:train}``): a fixed-seed permutation of the rows gives test the first
``min(1000, max(1, n // 10))`` rows, validation the next as many, and train keeps the rest in file
order. For the full 78,577 rows: train 76,577, validation 1,000, test 1,000.

``rosa-valid``: the 1,000 rows RoSA evaluated on (its ``scripts/train/data/sql/valid.jsonl``; the
RoSA presets set ``splits.test: rosa-valid``). Local source: the file ``valid.jsonl``. Hub source:
the rows of b-mc2's ``train`` split whose context and question (whitespace collapsed) match one of
RoSA's rows, by the fingerprints in ``sql_rosa_valid.txt`` (the load report says how many of the
1,000 were found; not checked against the hub here, which this machine cannot reach). Whenever a
split is ``rosa-valid``, the splits loaded from ``train`` leave those rows out.

Prompt: RoSA's chat content plus its training suffix (``finetune_example/preprocessing.py``):
``"Write a SQL query to answer the question based on the table schema.\\n\\n context: {context}
\\n\\n question: {question}\\n\\n answer:"``, then one space and the query (``separator = " "``),
so training text = RoSA's ``content + "\\n\\n answer: " + query``. RoSA's eval applied the suffix
twice (``... answer: \\n\\n answer: ``); that quirk is not reproduced: train and eval share one
prompt. Greedy decoding with no stop string (RoSA generated to EOS), at most 256 new tokens; the
scored query is the first ``SELECT ...`` line anywhere in the generation (RoSA's ``sql_eval.py``),
headline metric ``exact_match``.

Metrics (``METRICS``, headline first; :func:`score`):

* ``exact_match``: the post-processed query (RoSA's ``sql_eval.py``: regex ``SELECT (.*)`` -> group 0,
  i.e. from the first ``"SELECT "`` anywhere in the generation to the end of that line, stripped;
  generation has no stop string, so a query after a leading newline counts) equals a stripped reference.
* ``normalized_match``: equality after :func:`normalize_sql` -- SQL keywords upper-cased outside
  string literals, ``"..."`` literals rewritten as ``'...'`` (inner ``'`` doubled), whitespace
  collapsed and removed next to ``(``, ``)`` and ``,``, and a trailing ``;`` dropped.

Scores are fractions in 0-1.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rosa.data.readers import read_json_records
from rosa.data.spec import DatasetSpec, MatchedSplit, RawRow

INSTRUCTION = "Write a SQL query to answer the question based on the table schema."
_CHAT_CONTENT = re.compile(
    re.escape(INSTRUCTION) + r"\n\n context: (?P<context>.*)\n\n question: (?P<question>.*)", re.S
)
ROSA_VALID_FINGERPRINTS = Path(__file__).with_name("sql_rosa_valid.txt")


def render_prompt(row: Mapping[str, Any]) -> str:
    return f"{INSTRUCTION}\n\n context: {row['context']}\n\n question: {row['question']}\n\n answer:"


def from_chat(record: Mapping[str, Any]) -> RawRow | None:
    """RoSA's chat row (user prompt, assistant query) as ``{question, context, answer}``; None if it is not one."""
    messages = record.get("messages")
    if not (isinstance(messages, list) and len(messages) == 2 and all(isinstance(m, dict) for m in messages)):
        return None
    user, assistant = messages
    found = _CHAT_CONTENT.fullmatch(str(user.get("content", "")))
    if found is None or (user.get("role"), assistant.get("role")) != ("user", "assistant"):
        return None
    return {"question": found["question"], "context": found["context"], "answer": assistant.get("content")}


def read_records(path: Path) -> Iterator[tuple[int, RawRow | None]]:
    """JSON records of either format: sql-create-context rows or RoSA's chat rows."""
    for number, record in read_json_records(path):
        yield number, from_chat(record) if record is not None and "messages" in record else record


def fingerprint(row: Mapping[str, Any]) -> str:
    """A row's identity by content: its schema and question, whitespace collapsed. The query is left
    out, so that copies which quote string literals differently still match."""
    text = " ".join(str(row.get("context", "")).split()) + "\n" + " ".join(str(row.get("question", "")).split())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def target(row: Mapping[str, Any]) -> str:
    return row["answer"]


# --- scoring: queries ---

METRICS = ("exact_match", "normalized_match")
_SELECT = re.compile(r"SELECT (.*)")
KEYWORDS = frozenset(
    """select from where and or not in is null like between as join inner left right outer full cross on
    group by order having limit offset distinct count sum avg min max asc desc union all intersect except
    case when then else end exists""".split()
)
_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_WORD = re.compile(r"\b[A-Za-z_]+\b")
_SPACE_AROUND = re.compile(r"\s*([(),])\s*")


def _normalize_code(code: str) -> str:
    code = _WORD.sub(lambda m: m.group().upper() if m.group().lower() in KEYWORDS else m.group(), code)
    code = re.sub(r"\s+", " ", code)
    return _SPACE_AROUND.sub(r"\1", code)


def _normalize_literal(lit: str) -> str:
    if lit.startswith('"'):
        body = lit[1:-1].replace('""', '"')
        return "'" + body.replace("'", "''") + "'"
    return lit


def normalize_sql(query: str) -> str:
    query = query.strip()
    if query.endswith(";"):
        query = query[:-1].rstrip()
    out, pos = [], 0
    for m in _LITERAL.finditer(query):
        out.append(_normalize_code(query[pos : m.start()]))
        out.append(_normalize_literal(m.group()))
        pos = m.end()
    out.append(_normalize_code(query[pos:]))
    return "".join(out).strip()


def score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    exact = normalized = 0
    for pred, refs in zip(predictions, references, strict=True):
        pred = pred.strip()
        refs = [r.strip() for r in refs]
        exact += pred in refs
        normalized += normalize_sql(pred) in {normalize_sql(r) for r in refs}
    n = len(predictions)
    return {"exact_match": exact / n, "normalized_match": normalized / n}


def postprocess(text: str) -> str:
    """From the first ``"SELECT "`` to the end of its line, stripped; the first line if none."""
    m = _SELECT.search(text)
    if m:
        return m.group(0).strip()
    return text.strip().split("\n", 1)[0].strip()


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
    local_files={"train": "sql_create_context_v4.json", "rosa-valid": "valid.jsonl"},
    default_splits={"train": "train", "validation": "carve:train", "test": "carve:train"},
    eval_kind="generation",
    metrics=METRICS,
    score=score,
    postprocess=postprocess,
    render_prompt=render_prompt,
    target=target,
    read_local=read_records,
    sample=sample,
    separator=" ",
    stop_strings=[],  # RoSA generated to EOS and scored the first SELECT line anywhere in the text
    max_new_tokens=256,
    decoding={"num_beams": 1, "do_sample": False},
    carve_rows=1000,
    matched_splits={"rosa-valid": MatchedSplit("train", ROSA_VALID_FINGERPRINTS, fingerprint)},
)
