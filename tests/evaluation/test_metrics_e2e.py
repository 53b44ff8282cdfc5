"""E2E metrics: hand-computed cases, cross-checks with sacrebleu / NLTK, and the real test set."""

from __future__ import annotations

import csv
import math
import os
import random
from pathlib import Path

import pytest

from rosa.evaluation.scoring import compute_metrics
from rosa.metrics import e2e
from rosa.metrics.rouge import lcs_length, rouge_l_segment
from rosa.metrics.tokenizers import ptb_tokenize, tokenize_13a

CI = os.environ.get("CI", "").lower() == "true"
E2E_TEST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "e2e_nlg" / "testset_w_refs.csv"


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# ----------------------------------------------------------------------------------- tokenisers
@pytest.mark.parametrize(
    "text",
    [
        "The Vaults is a pub near Café Adriatic. It's rated 5 out of 5, prices > £30!",
        "Prices: £20-25 (cheap); 3.5 stars, 1,000 visitors -- 'family-friendly' \"yes\" &amp; &quot;ok&quot;",
        "a-b 5-6 x.y 1.5. e.g. U.S.A. $3 50% #1 @home {x} [y] a/b ~ ^ | \\ ` _",
    ],
)
def test_13a_matches_sacrebleu(text):
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    assert tokenize_13a(text) == Tokenizer13a()(text).split()


def test_13a_empty_is_one_empty_token():
    assert tokenize_13a("") == [""]  # the official scorer's "".split(" ") quirk


@pytest.mark.parametrize(
    "text, tokens",
    [
        (
            "The Vaults is a pub. It's near Café Adriatic!",
            ["the", "vaults", "is", "a", "pub", "it", "'s", "near", "café", "adriatic"],
        ),
        (
            "Don't -- it cannot be family-friendly (kids)",
            ["do", "n't", "it", "can", "not", "be", "family-friendly", "kids"],
        ),
        (
            "costs £20-25, 3.5 stars, 1,000 seats; e.g. U.S.",
            ["costs", "#", "20-25", "3.5", "stars", "1,000", "seats", "e.g.", "u.s."],
        ),
        (
            "a 5-star pub, 5of5, 20£-25, city center., near",
            ["a", "5-star", "pub", "5of5", "20", "#", "-25", "city", "center.", "near"],
        ),
        ('She said "yes"... Mr. Smith\'s', ["she", "said", "yes", "mr.", "smith", "'s"]),
        ("", []),
    ],
)
def test_ptb_tokenize(text, tokens):
    assert ptb_tokenize(text) == tokens


def test_ptb_tokenize_keeps_punct_when_asked():
    assert ptb_tokenize('"Hi" (there).', lower=False, drop_punct=False) == [
        "``",
        "Hi",
        "''",
        "-LRB-",
        "there",
        "-RRB-",
        ".",
    ]


# ----------------------------------------------------------------------------------- BLEU
def test_bleu_by_hand():
    # pred "the cat sat on the mat"; refs r1 "the cat sat on a mat", r2 "there is a cat on the mat"
    # 1-grams: the(2, clipped to 1) cat sat on mat -> 5/6
    # 2-grams: the-cat cat-sat sat-on (r1) on-the the-mat (r2) -> 5/5
    # 3-grams: the-cat-sat cat-sat-on (r1) on-the-mat (r2); sat-on-the misses -> 3/4
    # 4-grams: the-cat-sat-on (r1) -> 1/3
    # closest reference length 6 = output length -> BP 1;  BLEU = (5/6 * 1 * 3/4 * 1/3) ** (1/4)
    got = e2e.bleu(["The cat sat on the mat"], [["the cat sat on a mat", "there is a cat on the mat"]])
    assert got == pytest.approx((5 / 24) ** 0.25, rel=1e-12)  # 0.67560...


def test_bleu_short_output_quirks():
    # "the cat" vs "the cat sat on the mat": n-gram totals 2, 1, 0, -1 (official counts len-n+1 even
    # when negative); hits 2, 1, 0, 0.  Zero hits -> 1e-15, totals <= 0 -> 1e-9, so p3 = p4 = 1e-6.
    # BLEU = exp((ln 1 + ln 1 + 2 ln 1e-6) / 4) * BP = 1e-3 * exp(1 - 6/2)
    got = e2e.bleu(["the cat"], [["the cat sat on the mat"]])
    assert got == pytest.approx(1e-3 * math.exp(-2), rel=1e-9)
    # an empty output is one empty token: finite, tiny
    assert 0 < e2e.bleu([""], [["a b"]]) < 1e-3


def _random_corpus(seed: int, n: int = 60, min_len: int = 5):
    rng = random.Random(seed)
    vocab = "the a pub restaurant near river cheap food is in serves family-friendly . , 5 out of".split()

    def sent():
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(min_len, 14)))

    preds = [sent() for _ in range(n)]
    refs = [[sent() for _ in range(rng.randint(1, 4))] for _ in range(n)]
    # make outputs resemble a reference so that all n-gram orders have hits
    preds = [r[0] if i % 3 == 0 else p for i, (p, r) in enumerate(zip(preds, refs))]
    return preds, refs


def _sacrebleu(preds, refs):
    import sacrebleu

    k = max(map(len, refs))
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(k)]
    return (
        sacrebleu.corpus_bleu(preds, streams, tokenize="13a", lowercase=True, smooth_method="none", force=True).score
        / 100
    )


def _nltk_bleu(preds, refs):
    from nltk.translate.bleu_score import corpus_bleu

    tok = lambda s: [t.lower() for t in tokenize_13a(s.strip())]  # noqa: E731
    return corpus_bleu([[tok(r) for r in rr] for rr in refs], [tok(p) for p in preds])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bleu_matches_sacrebleu_and_nltk(seed):
    preds, refs = _random_corpus(seed)
    ours = e2e.bleu(preds, refs)
    assert 0.05 < ours < 1
    assert rel(ours, _sacrebleu(preds, refs)) < 1e-9
    assert rel(ours, _nltk_bleu(preds, refs)) < 1e-9


def test_bleu_is_case_insensitive():
    assert e2e.bleu(["The PUB is NEAR the river"], [["the pub is near the river"]]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------- NIST
def test_nist_by_hand():
    # ref "a b a" (3 tokens): counts a:2 b:1 ab:1 ba:1 aba:1; info(a)=log2(3/2), info(b)=log2(3/1),
    # info(ab)=log2(count(a)/count(ab))=log2(2)=1.  Output "a b": 1-grams both hit, 2 of them;
    # 2-gram ab hits, 1 of it; orders 3-5 have no output n-grams (totals 0, -1, -2) -> no term.
    # length ratio 2/3 -> penalty exp(-beta ln(2/3)^2) with beta = -ln .5 / ln(1.5)^2 -> exactly 0.5
    # NIST = 0.5 * (log2(4.5) / 2 + 1 / 1)
    assert e2e.nist(["a b"], [["a b a"]]) == pytest.approx(0.5 * (math.log2(4.5) / 2 + 1), rel=1e-12)


def test_nist_multi_reference_by_hand():
    # refs "a b", "b b" -> 4 reference tokens; counts over ALL references: a:1 b:3 ab:1 bb:1
    # 1-grams of "a b": a (info log2(4/1)=2), b (info log2(4/3)), clipped hits 1 each, 2 output 1-grams
    # 2-gram ab: info log2(count(a)/count(ab)) = 0.  Average reference length 2 = output -> penalty 1.
    assert e2e.nist(["a b"], [["a b", "b b"]]) == pytest.approx((2 + math.log2(4 / 3)) / 2, rel=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_nist_matches_nltk_with_one_reference(seed):
    # NLTK's corpus_nist picks one best reference per segment (and its length); the official scorer
    # clips against all references and uses the average reference length.  With a single
    # reference both definitions coincide, so they must agree.
    from nltk.translate.nist_score import corpus_nist

    preds, refs = _random_corpus(seed)
    refs = [[r[0]] for r in refs]
    tok = lambda s: [t.lower() for t in tokenize_13a(s.strip())]  # noqa: E731
    theirs = corpus_nist([[tok(r[0])] for r in refs], [tok(p) for p in preds], n=5)
    assert rel(e2e.nist(preds, refs), theirs) < 1e-9


# ----------------------------------------------------------------------------------- ROUGE-L
def test_lcs_against_dynamic_programming():
    rng = random.Random(0)

    def dp(a, b):
        row = [0] * (len(b) + 1)
        for x in a:
            prev = 0
            for j, y in enumerate(b, 1):
                cur = row[j]
                row[j] = prev + 1 if x == y else max(row[j], row[j - 1])
                prev = cur
        return row[-1]

    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 90))]
        assert lcs_length(a, b) == dp(a, b)


def test_rouge_l_by_hand():
    # cand "a b c d"; r1 "a c d e f": LCS 3 (a c d) -> P 3/4, R 3/5; r2 "b d": LCS 2 -> P 2/4, R 2/2
    # max P = 0.75, max R = 1.0 (taken separately);  F = (1 + 1.44) * .75 * 1 / (1 + 1.44 * .75) = 1.83 / 2.08
    got = rouge_l_segment("a b c d".split(), ["a c d e f".split(), "b d".split()])
    assert got == pytest.approx(1.83 / 2.08, rel=1e-12)
    assert rouge_l_segment([], [["a"]]) == 0.0


# ----------------------------------------------------------------------------------- CIDEr
def test_cider_by_hand():
    # 2 segments -> idf = ln 2 - ln max(1, df); every n-gram has df <= 1, so every weight is tf * ln 2.
    # seg 1: "a b" vs "a b": 1-gram cosine 1, 2-gram cosine 1, 3/4-grams 0 (zero norms) -> mean 0.5 -> x10 = 5
    # seg 2: "c d" vs "c e": 1-gram cosine ln2^2 / (sqrt2 ln2)^2 = 0.5, others 0 -> mean .125 -> 1.25
    # corpus = (5 + 1.25) / 2
    got = e2e.cider([["a", "b"], ["c", "d"]], [[["a", "b"]], [["c", "e"]]])
    assert got == pytest.approx(3.125, rel=1e-12)


def test_cider_length_penalty_by_hand():
    # seg 1: "a b c" vs "a b c d"; all weights tf * ln 2 (N = 2, df <= 1)
    #   1-grams: 3 / (sqrt3 * 2);  2-grams: 2 / (sqrt2 * sqrt3);  3-grams: 1 / (1 * sqrt2);  4-grams: 0
    #   length in bigrams: 2 vs 3 -> penalty exp(-1 / (2 * 6^2));  score = 10 * pen * sum / 4
    # seg 2: "x" vs "y" -> 0.   corpus = seg1 / 2
    pen = math.exp(-1 / 72)
    seg1 = 10 * pen * (3 / (2 * math.sqrt(3)) + 2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4
    got = e2e.cider([["a", "b", "c"], ["x"]], [[["a", "b", "c", "d"]], [["y"]]])
    assert got == pytest.approx(seg1 / 2, rel=1e-12)


# ----------------------------------------------------------------------------------- API
def test_compute_metrics_e2e_keys_and_identity():
    preds = ["The Vaults is a pub near Café Adriatic.", "Loch Fyne serves cheap French food."]
    refs = [[preds[0], "There is a pub called The Vaults."], ["Cheap French food is served at Loch Fyne.", preds[1]]]
    scores = compute_metrics("e2e", preds, refs)
    assert list(scores) in (list(e2e.METRICS), ["bleu", "nist", "meteor_nltk", "rouge_l", "cider"])  # no Java: NLTK's
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["bleu"] == pytest.approx(1.0) and scores["rouge_l"] == pytest.approx(1.0)


def test_postprocess_e2e():
    from rosa.evaluation.scoring import postprocess

    assert postprocess("e2e", "  \n The Vaults is a pub. \nInput: x") == "The Vaults is a pub."


# ----------------------------------------------------------------------------------- real data
def _load_test_set():
    if not E2E_TEST.is_file():
        if CI:
            pytest.fail(f"E2E test set missing under CI: {E2E_TEST}")
        pytest.skip(f"E2E test set not present at {E2E_TEST}")
    groups: dict[str, list[str]] = {}
    with open(E2E_TEST, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            groups.setdefault(row["mr"], []).append(row["ref"])
    return groups


def test_e2e_real_references_leave_one_out():
    groups = _load_test_set()
    assert len(groups) == 630 and sum(map(len, groups.values())) == 4693
    multi = [refs for refs in groups.values() if len(refs) > 1]  # 14 MRs have a single reference
    preds, refs = [r[0] for r in multi], [r[1:] for r in multi]
    scores = compute_metrics("e2e", preds, refs)
    again = e2e.score(preds, refs, with_meteor=False)  # deterministic
    assert all(again[k] == scores[k] for k in ("bleu", "nist", "rouge_l", "cider"))
    # plausible ranges: same scale as the official TGen test figures (BLEU .6593, NIST 8.6094,
    # METEOR .4483, ROUGE-L .6850, CIDEr 2.2338); humans score a bit lower than TGen on BLEU
    assert 0.50 < scores["bleu"] < 0.70
    assert 7.5 < scores["nist"] < 10.0
    assert 0.55 < scores["rouge_l"] < 0.75
    assert 1.3 < scores["cider"] < 2.6
    # BLEU agrees with sacrebleu on the real data (variable number of references)
    assert rel(scores["bleu"], _sacrebleu(preds, refs)) < 1e-9
    # the official scorer's values on the same data (tests/evaluation/data/e2e_official/README.md)
    assert scores["bleu"] == pytest.approx(0.6045619083952298, rel=1e-9)
    assert scores["nist"] == pytest.approx(8.898831365878737, rel=1e-9)
    assert scores["rouge_l"] == pytest.approx(0.6381129068662674, rel=1e-9)
    assert scores["cider"] == pytest.approx(1.8572240685162773, rel=1e-9)
    if "meteor" in scores:  # Meteor 1.5 (Java); without Java NLTK's approximation is ~5% lower
        assert scores["meteor"] == pytest.approx(0.456309311485148, rel=1e-6)
    elif not math.isnan(scores["meteor_nltk"]):  # depends on NLTK's aligner and the WordNet files
        assert scores["meteor_nltk"] == pytest.approx(0.4323, rel=2e-3)
    # a prediction equal to one of its references is a perfect BLEU / ROUGE-L
    first, every = [r[0] for r in groups.values()], list(groups.values())
    assert e2e.bleu(first, every) == pytest.approx(1.0)
    assert e2e.rouge_l(
        [ptb_tokenize(p) for p in first], [[ptb_tokenize(r) for r in rr] for rr in every]
    ) == pytest.approx(1.0)


def test_bleu_and_rouge_l_are_sums_of_row_counts():
    """row_counts per MR, summed, give the corpus BLEU and ROUGE-L that score() reports (what the
    report's bootstrap resamples)."""
    import numpy as np

    from rosa.metrics import e2e

    refs = [
        ["The Eagle is a cheap coffee shop near Burger King.", "Cheap coffee shop The Eagle is by Burger King."],
        ["Zizzi is a pub in the city centre.", "In the city centre there is a pub called Zizzi."],
        ["Green Man serves Italian food.", "Italian food is served at the Green Man."],
    ]
    preds = ["The Eagle is a cheap coffee shop.", "Zizzi is a pub in the riverside area.", "Italian food at Green Man."]
    full = e2e.score(preds, refs, with_meteor=False)
    counts = np.array([e2e.row_counts(p, r) for p, r in zip(preds, refs)])
    from_counts = e2e.metrics_from_counts(counts.sum(0).tolist(), len(preds))
    assert from_counts["bleu"] == pytest.approx(full["bleu"], abs=1e-12)
    assert from_counts["rouge_l"] == pytest.approx(full["rouge_l"], abs=1e-12)
    twice = e2e.metrics_from_counts(np.concatenate([counts, counts]).sum(0).tolist(), 2 * len(preds))
    assert twice["bleu"] == pytest.approx(e2e.score(preds * 2, refs * 2, with_meteor=False)["bleu"], abs=1e-12)
