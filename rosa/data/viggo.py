"""ViGGO (video game dialogue): a sentence -> its meaning representation (the RoSA direction).

Source: Juraska et al., INLG 2019; github.com/jjuraska/data2text-nlg; HF ``GEM/viggo`` (fields
``meaning_representation`` = ``mr``, ``target`` = ``ref``). Local files (CSV ``mr,ref``, quoted
cells): ``train.csv`` 5,103 rows (1,675 unique MRs), ``valid.csv`` 714, ``test.csv`` 1,083.
An MR is ``da_type(slot[value], ...)`` with 9 dialogue acts and 14 slots.

Prompt: RoSA's instruction, verbatim (``tasks.py`` and ``viggo_eval.py``): the text below with
the sentence (``ref``) in place of ``{target}``, ending ``"### Meaning representation:\\n"``;
the target is the MR, right after that newline (``separator = ""``). RoSA trains on ``train``
and evaluates on ``validation`` with greedy decoding; the metric is exact match of the first
generated line with the gold MR (headline ``exact_match``).

Metrics (``METRICS``, headline first; :func:`score`):

* ``exact_match``: the predicted MR string equals a reference after ``strip()`` (RoSA convention).
* ``slot_precision`` / ``slot_recall`` / ``slot_f1``: micro-averaged over the corpus, on the set of
  ``("__da__", act)`` plus one ``(attribute, value)`` pair per value -- list values like
  ``genres[action, puzzle]`` are split on ``", "`` and an empty value ``specifier[]`` gives
  ``(attribute, "")``.  Order-insensitive; an unparseable prediction has no pairs.  With several
  references the one giving the best per-example F1 is used.
* ``da_accuracy``: the dialogue act (function name) equals the reference's.

MR syntax: ``act(attr[value], attr[v1, v2], attr[])``.  Scores are fractions in 0-1.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rosa.data.readers import read_csv_rows
from rosa.data.spec import DatasetSpec, RawRow

PROMPT = (
    "Given a target sentence construct the underlying meaning representation of the input sentence as a "
    "single function with attributes and attribute values. This function should describe the target string "
    "accurately and the function must be one of the following ['inform', 'request', 'give_opinion', "
    "'confirm', 'verify_attribute', 'suggest', 'request_explanation', 'recommend', 'request_attribute']. "
    "The attributes must be one of the following: ['name', 'exp_release_date', 'release_year', 'developer', "
    "'esrb', 'rating', 'genres', 'player_perspective', 'has_multiplayer', 'platforms', 'available_on_steam', "
    "'has_linux_release', 'has_mac_release', 'specifier']"
    "\n\n### Target sentence:\n{target}\n\n### Meaning representation:\n"
)


def render_prompt(row: Mapping[str, Any]) -> str:
    return PROMPT.replace("{target}", row["ref"])


def target(row: Mapping[str, Any]) -> str:
    return row["mr"]


# --- scoring: meaning representations ---

METRICS = ("exact_match", "slot_precision", "slot_recall", "slot_f1", "da_accuracy")
_MR = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)
_SLOT = re.compile(r"([A-Za-z_]\w*)\s*\[([^\]]*)\]")
_MARKER = "### Meaning representation:\n"


def parse_mr(text: str) -> tuple[str, list[tuple[str, str]]] | None:
    """``(dialogue_act, [(attribute, value), ...])`` or ``None`` when ``text`` is not an MR."""
    m = _MR.match(text)
    if not m:
        return None
    pairs = []
    for attr, value in _SLOT.findall(m.group(2)):
        values = [v.strip() for v in value.split(", ")] if value.strip() else [""]
        pairs.extend((attr, v) for v in values)
    return m.group(1), pairs


def mr_pairs(text: str) -> set[tuple[str, str]]:
    parsed = parse_mr(text)
    if parsed is None:
        return set()
    act, pairs = parsed
    return {("__da__", act), *pairs}


def _f1(tp: int, n_pred: int, n_gold: int) -> float:
    return 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 1.0


def row_counts(prediction: str, references: Sequence[str]) -> tuple[int, int, int, int, int]:
    """One example's ``(exact, dialogue act right, slot true positives, predicted slots, gold slots)``;
    the metrics are functions of their sums over the corpus (:func:`metrics_from_counts`), which is
    what lets a bootstrap resample examples without parsing them again (``rosa.results.stats``)."""
    pred = prediction.strip()
    refs = [r.strip() for r in references]
    p = mr_pairs(pred)
    best = max((mr_pairs(r) for r in refs), key=lambda g: _f1(len(p & g), len(p), len(g)))
    pred_act = parse_mr(pred)
    gold_acts = {parsed[0] for parsed in map(parse_mr, refs) if parsed}
    return int(pred in refs), int(pred_act is not None and pred_act[0] in gold_acts), len(p & best), len(p), len(best)


def metrics_from_counts(sums: Sequence[int], n: int) -> dict[str, float]:
    """The metrics of ``n`` examples from the sums of their :func:`row_counts`."""
    exact, da_ok, tp, n_pred, n_gold = sums
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "exact_match": exact / n,
        "slot_precision": precision,
        "slot_recall": recall,
        "slot_f1": f1,
        "da_accuracy": da_ok / n,
    }


def score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    counts = [row_counts(pred, refs) for pred, refs in zip(predictions, references, strict=True)]
    return metrics_from_counts([sum(column) for column in zip(*counts)], len(predictions))


def postprocess(text: str) -> str:
    """The first line after the ``### Meaning representation:`` marker (if present), stripped.

    RoSA applies ``### Meaning representation:\\n(.*)`` to prompt + generation; for a generation
    alone this is its first line.
    """
    if _MARKER in text:
        text = text.rsplit(_MARKER, 1)[1]
    return text.split("\n", 1)[0].strip()


# --- sample data: a few dialogue acts, each MR with 2-3 template sentences ---

_GAMES = [
    "Dirt: Showdown",
    "Portal 2",
    "The Witcher 3",
    "Little Big Adventure",
    "Spider-Man",
    "Rocket League",
    "Tomb Raider",
    "SpellForce 3",
    "Half-Life 2",
    "Mirror's Edge",
]
_GENRES = ["action", "adventure", "puzzle", "driving/racing", "sport", "role-playing", "strategy", "shooter"]
_PLATFORMS = ["PlayStation", "Xbox", "PC", "Nintendo Switch"]
_RATINGS = ["poor", "average", "good", "excellent"]


def _dialogue_act(rng: random.Random) -> tuple[str, list[str]]:
    """An MR and the sentences that express it."""
    game = rng.choice(_GAMES)
    kind = rng.randrange(4)
    if kind == 0:
        year, genres, platforms = rng.randint(1995, 2020), rng.sample(_GENRES, 2), rng.sample(_PLATFORMS, 2)
        mr = (
            f"inform(name[{game}], release_year[{year}], genres[{', '.join(genres)}], "
            f"platforms[{', '.join(platforms)}])"
        )
        article = "an" if genres[0][0] in "aeiou" else "a"
        on = f"{platforms[0]} and {platforms[1]}"
        return mr, [
            f"{game} is {article} {genres[0]} and {genres[1]} game from {year} for {on}.",
            f"Released in {year}, {game} is a {genres[0]}, {genres[1]} game on {on}.",
            f"{game} came out in {year}. It is {article} {genres[0]} {genres[1]} game for {on}.",
        ]
    if kind == 1:
        rating = rng.choice(_RATINGS)
        mr = f"give_opinion(name[{game}], rating[{rating}])"
        return mr, [
            f"I think {game} is {'an' if rating[0] in 'aeiou' else 'a'} {rating} game.",
            f"In my opinion {game} is {rating}.",
            f"{game}? I would call it {rating}.",
        ]
    if kind == 2:
        genre, multiplayer = rng.choice(_GENRES), rng.choice(["yes", "no"])
        mr = f"verify_attribute(name[{game}], genres[{genre}], has_multiplayer[{multiplayer}])"
        mode = "multiplayer" if multiplayer == "yes" else "single-player"
        return mr, [
            f"You liked {game}, so do you like {mode} {genre} games?",
            f"Since you enjoyed {game}, are {mode} {genre} games your thing?",
            f"Do you generally enjoy {mode} {genre} games like {game}?",
        ]
    platform = rng.choice(_PLATFORMS)
    mr = f"suggest(name[{game}], platforms[{platform}])"
    return mr, [
        f"Have you tried playing {game} on {platform}?",
        f"Do you want to play {game} on {platform}?",
        f"How about {game} on {platform}?",
    ]


def sample(split: str, n: int, seed: int) -> list[RawRow]:
    rng = random.Random(f"viggo:{split}:{seed}")
    rows: list[RawRow] = []
    while len(rows) < n:
        mr, sentences = _dialogue_act(rng)
        rows += [{"mr": mr, "ref": sentence} for sentence in rng.sample(sentences, rng.randint(2, 3))]
    return rows[:n]


SPEC = DatasetSpec(
    name="viggo",
    hub_id="GEM/viggo",
    hub_config=None,
    fields=("mr", "ref"),
    hub_fields={"mr": "meaning_representation", "ref": "target"},
    local_files={"train": "train.csv", "validation": "valid.csv", "test": "test.csv"},
    default_splits={"train": "train", "validation": "validation", "test": "test"},
    eval_kind="generation",
    metrics=METRICS,
    score=score,
    postprocess=postprocess,
    render_prompt=render_prompt,
    target=target,
    read_local=read_csv_rows,
    sample=sample,
    separator="",
    stop_strings=["\n"],
    max_new_tokens=256,
    decoding={"num_beams": 1, "do_sample": False},
)
