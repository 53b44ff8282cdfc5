"""Tokenisers shared by the text-generation metrics.

Two tokenisations are used by the official E2E scorer (tuetschek/e2e-metrics, ``measure_scores.py -p``):

* :func:`tokenize_13a` -- the NIST mteval-v13a tokenisation, used for BLEU and NIST.  The official
  pure-Python BLEU/NIST apply it to the raw (stripped) line and lower-case n-grams afterwards.
* :func:`ptb_tokenize` -- a small Penn-Treebank-style tokeniser used for ROUGE-L, CIDEr and METEOR.
  The official pipeline runs the Stanford CoreNLP 3.4.1 ``PTBTokenizer`` (Java) with
  ``-preserveLines -lowerCase`` and then drops punctuation tokens; ours renders that in pure Python
  and gives the same tokens on every E2E test and development reference (checked against the jar
  in tests/evaluation/test_metrics_e2e_official.py). Constructs outside E2E may still differ
  (e.g. ``gonna``, ``a/b``, ``@home``, which Stanford splits or keeps whole differently).
"""

from __future__ import annotations

import re

__all__ = ["tokenize_13a", "ptb_tokenize", "PTB_DROPPED_PUNCT"]

# --------------------------------------------------------------------------------------------
# mteval-v13a ("13a") tokenisation
# --------------------------------------------------------------------------------------------
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))
_13A_RULES = (
    # every ASCII punctuation character except ' , - . becomes its own token
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    # period and comma are split off unless they sit between digits
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    # a dash after a digit is split off
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)
_SPACES = re.compile(r"\s+")


def tokenize_13a(text: str) -> list[str]:
    """mteval-v13a tokenisation (case is kept; callers lower-case when needed).

    Like the official pure-Python scorer, an empty string yields one empty token ``[""]``
    (it splits on a single space), so an empty output still has length 1.
    """
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    text = f" {text} "
    for pattern, repl in _13A_RULES:
        text = pattern.sub(repl, text)
    return _SPACES.sub(" ", text).strip().split(" ")


# --------------------------------------------------------------------------------------------
# PTB-style tokenisation (approximating Stanford PTBTokenizer -lowerCase + COCO punctuation removal)
# --------------------------------------------------------------------------------------------
#: Tokens the COCO caption evaluation removes after PTB tokenisation (given here lower-cased).
PTB_DROPPED_PUNCT = frozenset(
    {"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
)

_TITLES = "mr|mrs|ms|dr|st|rd|ave|blvd|jr|sr|prof|vs|etc|inc|ltd|co|approx|mt"
_PTB_TOKEN = re.compile(
    rf"""
      (?P<acronym>(?:[^\W\d_]\.){{2,}})                          # e.g. U.S. i.e.
    | (?P<title>(?i:{_TITLES})\.)(?=\s|$)                        # Mr. St. etc.
      # numbers: 3.5 1,000 20-25 10:30 1990s 5pm 5of5 5-star, and "-25" after a non-word character (20£-25)
    | (?P<number>(?:(?<![^\W_])-)?\d+(?:[.,:]\d+)*(?:-\d+(?:[.,:]\d+)*)*[^\W_]*(?:-[^\W_]+)*)
    | (?P<period_comma>[^\W\d_]+\.)(?=,)                         # "center.," keeps its period (Stanford does)
    | (?P<clitic>'(?i:s|m|d|ll|re|ve)(?![^\W_]))                 # a clitic after a space: ". 's area"
    | (?P<word>[^\W_]+(?:[-'][^\W_]+)*)                          # words, hyphenated words, clitics
    | (?P<punct>\.\.\.+|--+|``|''|[^\w\s]|_)                     # single punctuation / symbols
    """,
    re.VERBOSE,
)
_CLITIC = re.compile(r"(?i)^(.+?)(n't|'s|'m|'d|'ll|'re|'ve)$")
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
# Stanford's normalizeCurrency (on by default): the old WSJ treebank has only $ and # (pounds)
_CURRENCY = {"£": "#", "€": "$", "¢": "cents"}


def _split_word(word: str) -> list[str]:
    lower = word.lower()
    if lower == "cannot":
        return [word[:3], word[3:]]
    m = _CLITIC.match(word)
    if m and m.group(1) and m.group(1) != "'":
        return [m.group(1), m.group(2)]
    return [word]


def ptb_tokenize(text: str, lower: bool = True, drop_punct: bool = True) -> list[str]:
    """PTB-style tokenisation: split punctuation, clitics (``'s n't 're 've 'll 'd 'm``),
    ``cannot`` -> ``can not``; keep hyphenated words, numbers like ``3.5``/``1,000``/``20-25``,
    ``5-star``, ``5of5``, a ``-25`` after a non-word character, acronyms (``U.S.``), a few titles
    (``Mr.``) and a word's period before a comma (``center.,``).  Currency as Stanford's
    ``normalizeCurrency``: ``£`` -> ``#``, ``€`` -> ``$``, ``¢`` -> ``cents``.  Quotes become
    `````/``''``, brackets ``-LRB-``-style.  With ``lower`` the tokens are lower-cased (as ``PTBTokenizer -lowerCase``);
    with ``drop_punct`` the tokens in :data:`PTB_DROPPED_PUNCT` are removed (as the COCO
    evaluation does).  Returns ``[]`` for text without tokens.
    """
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    tokens: list[str] = []
    for m in _PTB_TOKEN.finditer(text):
        kind, tok = m.lastgroup, m.group()
        if kind == "word":
            tokens.extend(_split_word(tok))
        elif kind == "punct":
            if tok == '"':
                before = text[: m.start()]
                opening = not before or before[-1].isspace() or before[-1] in "([{<"
                tok = "``" if opening else "''"
            tokens.append(_BRACKETS.get(tok) or _CURRENCY.get(tok, tok))
        else:
            tokens.append(tok)
    if lower:
        tokens = [t.lower() for t in tokens]
    if drop_punct:
        tokens = [t for t in tokens if t.lower() not in PTB_DROPPED_PUNCT]
    return tokens
