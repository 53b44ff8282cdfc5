"""SQL (sql-create-context / WikiSQL-style) query metrics.

* ``exact_match``: the post-processed query (RoSA's ``sql_eval.py``: regex ``SELECT (.*)`` -> group 0,
  i.e. from the first ``"SELECT "`` anywhere in the generation to the end of that line, stripped;
  generation has no stop string, so a query after a leading newline counts) equals a stripped reference.
* ``normalized_match``: equality after :func:`normalize_sql` -- SQL keywords upper-cased outside
  string literals, ``"..."`` literals rewritten as ``'...'`` (inner ``'`` doubled), whitespace
  collapsed and removed next to ``(``, ``)`` and ``,``, and a trailing ``;`` dropped.

Scores are fractions in 0-1.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["KEYWORDS", "normalize_sql", "score", "postprocess"]

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
