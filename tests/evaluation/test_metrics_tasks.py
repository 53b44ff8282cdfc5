"""GSM8k, ViGGO, SQL and ELI5 metrics (in their dataset modules), and the public API of rosa.evaluation.scoring."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

import rosa.data.registry as registry
from rosa.data import DATASETS, get_spec, gsm8k, sql, viggo
from rosa.evaluation.generate import cut_at_stop
from rosa.evaluation.scoring import compute_metrics, lm_metrics, postprocess

# ----------------------------------------------------------------------------------- GSM8k
GOLD = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"


@pytest.mark.parametrize(
    "output, strict, flexible",
    [
        ("She sold 24 + 48 = 72 clips.\n#### 72", "72", "72"),
        ("#### -5", "-5", "-5"),
        ("#### 1,234", "1,234", "1,234"),  # normalised to 1234 before comparing
        ("The total is $5.\n#### $5", "[invalid]", "$5"),  # "#### $" does not match the strict regex
        ("#### 72.", "72.", "72."),  # trailing period removed by normalisation
        ("#### 5 then #### 6", "5", "6"),  # strict takes the first, flexible the last number
        ("no number here", "[invalid]", "[invalid]"),
        ("The answer is 3", "[invalid]", "3"),  # one digit: only the (-?[0-9]+) branch
        ("It costs $1,000.50 in total", "[invalid]", "$1,000.50"),
        ("First 2. Then 4 apples.", "[invalid]", "4"),
        ("####5", "[invalid]", "5"),  # no space after ####
        ("#### -3.5\n", "-3.5", "-3.5"),
    ],
)
def test_gsm8k_extraction(output, strict, flexible):
    assert gsm8k.extract_strict(output) == strict
    assert gsm8k.extract_flexible(output) == flexible


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("1,234", "1234"),
        ("$5", "5"),
        ("72.", "72"),
        ("3.50", "3.50"),
        ("[invalid]", "[invalid]"),
        ("x #### 7", "7"),
        ("ABC", "abc"),
    ],
)
def test_gsm8k_normalize(raw, normal):
    assert gsm8k.normalize(raw) == normal


def test_gsm8k_scores():
    preds = [
        "so 72 clips\n#### 72",  # strict ok, flexible ok
        "#### 72.",  # both ok (trailing period)
        "the answer is 72",  # strict invalid, flexible ok
        "#### 70 and later 72",  # strict 70 (wrong), flexible 72 (ok)
        "#### 1,000",  # gold "1000": both ok after removing ","
        "nothing",  # both wrong
    ]
    refs = [[GOLD], [GOLD], [GOLD], [GOLD], ["... #### 1000"], [GOLD]]
    got = compute_metrics("gsm8k", preds, refs)
    assert got == {"exact_match_strict": 3 / 6, "exact_match_flexible": 5 / 6}


def test_gsm8k_gold_and_postprocess():
    assert gsm8k.normalize(GOLD) == "72" and gsm8k.normalize("... #### 1,000") == "1000"  # the gold: whole reference
    assert postprocess("gsm8k", " Step 1.\n#### 4\n\nQuestion: next one") == "Step 1.\n#### 4"


def test_gsm8k_answer_after_a_blank_line_is_scored():
    # lm-eval's current stop list (Question:, </s>, <|im_end|>); the old "\n\n" cut this answer away
    generated = cut_at_stop(
        "Let me think.\n\nShe has 3 + 4 = 7 apples.\n#### 7\n\nQuestion: next", get_spec("gsm8k").stop_strings
    )
    assert generated == "Let me think.\n\nShe has 3 + 4 = 7 apples.\n#### 7\n\n"
    scores = compute_metrics("gsm8k", [postprocess("gsm8k", generated)], [["3 + 4 = 7\n#### 7"]])
    assert scores == {"exact_match_strict": 1.0, "exact_match_flexible": 1.0}


# ----------------------------------------------------------------------------------- ViGGO
GOLD_MR = "inform(name[Tomb Raider], release_year[1999], genres[action-adventure, puzzle], has_multiplayer[no])"


def test_viggo_parse():
    act, pairs = viggo.parse_mr("request_attribute(player_perspective[])")
    assert act == "request_attribute" and pairs == [("player_perspective", "")]
    assert viggo.mr_pairs(GOLD_MR) == {
        ("__da__", "inform"),
        ("name", "Tomb Raider"),
        ("release_year", "1999"),
        ("genres", "action-adventure"),
        ("genres", "puzzle"),
        ("has_multiplayer", "no"),
    }
    assert viggo.mr_pairs("The game is fun.") == set()
    assert viggo.mr_pairs("inform(esrb[T (for Teen)])") == {("__da__", "inform"), ("esrb", "T (for Teen)")}


def test_viggo_scores_by_hand():
    preds = [
        # 1) same pairs, different order -> not an exact match, but all 6 pairs right
        "inform(genres[puzzle, action-adventure], name[Tomb Raider], release_year[1999], has_multiplayer[no])",
        # 2) exact match (6 pairs right)
        GOLD_MR,
        # 3) wrong act, 1 right slot (name), 1 wrong slot: pred pairs 3, right 1; gold 6
        "confirm(name[Tomb Raider], release_year[2000])",
        # 4) unparseable -> no pairs; gold 6
        "I think it's a puzzle game",
    ]
    got = compute_metrics("viggo", preds, [[GOLD_MR]] * 4)
    # tp = 6 + 6 + 1 + 0 = 13; predicted pairs = 6 + 6 + 3 + 0 = 15; gold pairs = 4 * 6 = 24
    assert got["exact_match"] == pytest.approx(1 / 4)
    assert got["slot_precision"] == pytest.approx(13 / 15)
    assert got["slot_recall"] == pytest.approx(13 / 24)
    assert got["slot_f1"] == pytest.approx(2 * 13 / (15 + 24))
    assert got["da_accuracy"] == pytest.approx(2 / 4)
    assert list(got) == list(get_spec("viggo").metrics)


def test_viggo_postprocess():
    assert postprocess("viggo", " inform(name[X])  \nextra line") == "inform(name[X])"
    assert postprocess("viggo", "...### Meaning representation:\ninform(name[Y])\n###") == "inform(name[Y])"


# ----------------------------------------------------------------------------------- SQL
def test_sql_postprocess_rosa_convention():
    assert postprocess("sql", " answer: SELECT name FROM t WHERE x = 1 \nSELECT 2") == "SELECT name FROM t WHERE x = 1"
    assert postprocess("sql", "select lower case only") == "select lower case only"


def test_sql_query_after_a_leading_newline_is_scored():
    # RoSA's sql_eval.py: the first "SELECT ..." line anywhere in the generation (no newline stop first)
    generated = cut_at_stop("\nSELECT a FROM t WHERE b = 1\n\n answer: SELECT c", get_spec("sql").stop_strings)
    assert postprocess("sql", generated) == "SELECT a FROM t WHERE b = 1"
    assert (
        compute_metrics("sql", [postprocess("sql", generated)], [["SELECT a FROM t WHERE b = 1"]])["exact_match"] == 1.0
    )


@pytest.mark.parametrize(
    "a, b",
    [
        ("select COUNT(name) from table_1 where age > 30", "SELECT COUNT(name) FROM table_1 WHERE age > 30"),
        ('SELECT  name\nFROM t WHERE city = "Paris"', "SELECT name FROM t WHERE city = 'Paris'"),
        ("SELECT MAX ( score ) FROM t ;", "SELECT MAX(score) FROM t"),
        ('SELECT a FROM t WHERE b = "O\'Brien"', "SELECT a FROM t WHERE b = 'O''Brien'"),
    ],
)
def test_sql_normalize_equal(a, b):
    assert sql.normalize_sql(a) == sql.normalize_sql(b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("SELECT name FROM t WHERE city = 'paris'", "SELECT name FROM t WHERE city = 'Paris'"),  # literal case kept
        ("SELECT name FROM T", "SELECT name FROM t"),  # identifier case kept
        ("SELECT name FROM t WHERE c = 'select'", "SELECT name FROM t WHERE c = 'SELECT'"),  # no folding in literals
    ],
)
def test_sql_normalize_different(a, b):
    assert sql.normalize_sql(a) != sql.normalize_sql(b)


def test_sql_scores():
    ref = 'SELECT name FROM table_2 WHERE city = "Paris"'
    preds = [ref, "select name from table_2 where city = 'Paris'", "SELECT city FROM table_2"]
    assert compute_metrics("sql", preds, [[ref]] * 3) == {"exact_match": 1 / 3, "normalized_match": 2 / 3}


# ----------------------------------------------------------------------------------- ELI5
def test_eli5_rouge_l_by_hand():
    # "Water is wet." -> [water, is, wet]; ref "Water is very wet indeed" -> LCS 3: P 1, R 3/5
    # F = 2.44 * 1 * .6 / (.6 + 1.44 * 1) = 1.464 / 2.04
    got = compute_metrics("eli5", ["Water is wet."], [["Water is very wet indeed"]])
    assert got == {"rouge_l": pytest.approx(1.464 / 2.04, rel=1e-12)}


def test_lm_metrics():
    got = lm_metrics(math.log(8.0))
    assert got["ppl"] == pytest.approx(8.0) and got["bits_per_token"] == pytest.approx(3.0)


# ----------------------------------------------------------------------------------- API
def test_headline_is_first_metric():
    headline = {name: spec.headline_metric for name, spec in DATASETS.items()}
    # ELI5 is language modelling: its headline is validation perplexity (ROSA's ELI5 table), not ROUGE-L
    assert headline == {
        "e2e": "bleu",
        "gsm8k": "exact_match_strict",
        "viggo": "exact_match",
        "sql": "exact_match",
        "eli5": "ppl",
    }
    assert all(DATASETS[d].metrics[0] == headline[d] for d in headline)


def test_eli5_metrics_list_what_evaluation_reports():
    # the loss gives ppl, bits_per_token and loss; --generate adds rouge_l
    spec = get_spec("eli5")
    assert list(spec.metrics) == [*lm_metrics(1.0), "rouge_l"]
    assert list(lm_metrics(1.0)) == ["ppl", "bits_per_token", "loss"] and lm_metrics(1.0)["loss"] == 1.0
    assert set(compute_metrics("eli5", ["a b"], [["a b"]])) <= set(spec.metrics)


def test_scorer_names_must_be_the_specs(monkeypatch):
    spec = get_spec("sql")
    monkeypatch.setitem(
        registry._discover(), "sql", replace(spec, score=lambda p, r: {"exact_match": 1.0, "bleu": 0.5})
    )
    with pytest.raises(ValueError, match="reports bleu"):
        compute_metrics("sql", ["a"], [["a"]])
    monkeypatch.setitem(registry._discover(), "sql", replace(spec, score=lambda p, r: {"exact_match": 1.0}))
    with pytest.raises(ValueError, match="does not report normalized_match"):
        compute_metrics("sql", ["a"], [["a"]])


def test_api_errors():
    with pytest.raises(ValueError, match="unknown dataset"):
        compute_metrics("wikitext", ["a"], [["a"]])
    with pytest.raises(ValueError, match="reference lists"):
        compute_metrics("sql", ["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no predictions"):
        compute_metrics("sql", [], [])
    with pytest.raises(ValueError, match="no reference"):
        compute_metrics("sql", ["a"], [[]])
    with pytest.raises(ValueError, match="unknown dataset"):
        postprocess("nope", "x")


def test_single_string_reference_is_accepted():
    assert compute_metrics("sql", ["SELECT 1"], ["SELECT 1"]) == {"exact_match": 1.0, "normalized_match": 1.0}
