"""E2E NLG metrics as the official scorer prints them (tuetschek/e2e-metrics ``measure_scores.py -p``).

All five scores are on the scale the official scorer prints (BLEU, METEOR, ROUGE-L in 0-1; NIST
around 8-9 for good systems; CIDEr around 2, being x10 scaled).  Every segment (one unique MR) has
one prediction and several references.  Inputs are stripped like the scorer's line reader.

* **BLEU** (pymteval ``BLEUScore``): mteval-v13a tokenisation, n-grams lower-cased (case-insensitive),
  corpus-level clipped n-gram precisions for n = 1..4 (clip = max count in any one reference),
  brevity penalty against the reference closest in length (ties: the shorter), geometric mean with
  no smoothing except that zero hit counts become 1e-15 (and zero n-gram totals 1e-9) so that the
  logarithm is defined.  As in the official code, a segment of L tokens adds ``L - n + 1`` to the
  n-gram total even when that is negative (L < n - 1), and an empty output is one empty token.
* **NIST** (pymteval ``NISTScore``): same tokenisation, n = 1..5; information weight of an n-gram
  ``log2(count(w1..w_{n-1}) / count(w1..wn))`` with counts over *all* references of the corpus
  (the 0-gram count is the total number of reference tokens); per order, sum of info of clipped
  hits divided by the number of output n-grams, summed over orders; times the length penalty
  ``exp(-beta * ln(min(1, L_sys / L_ref))^2)``, ``beta = -ln 0.5 / ln(1.5)^2``, where L_ref sums
  each segment's *average* reference length.
* **ROUGE-L**, **CIDEr**, **METEOR** get PTB-style tokenised, lower-cased text with punctuation
  removed (:func:`~rosa.metrics.tokenizers.ptb_tokenize`, a pure-Python rendering of
  the Stanford PTBTokenizer 3.4.1 the official pipeline runs in Java; identical tokens on every
  E2E test and development reference).
* **ROUGE-L**: see :mod:`rosa.metrics.rouge` (max P, max R, beta 1.2, mean).
* **CIDEr** (CIDEr-D of the COCO evaluation): n = 1..4 term-frequency vectors weighted by
  ``idf = ln(N_segments) - ln(max(1, df))`` where ``df`` counts the segments whose references
  contain the n-gram; per order the clipped cosine ``sum min(h, r) r / (|h| |r|)`` (0 when a norm is
  0) times ``exp(-delta^2 / (2 * 6^2))``, delta being the difference in *bigram* counts (as the COCO
  code counts length); mean over orders, averaged over references, times 10; corpus = mean.
* **METEOR**: Meteor 1.5 itself (Java, ``-l en -norm``, corpus-level statistics), run as the
  official scorer runs it (:mod:`rosa.metrics.meteor`; needs ``pycocoevalcap`` and a
  Java runtime).  Without them the score is NLTK's ``meteor_score`` with Meteor 1.5's English
  parameters (:func:`meteor_nltk`) and is reported as ``meteor_nltk``, never as ``meteor``, with
  one warning: it has no paraphrase table, no per-matcher or function-word weights and averages
  segment scores, so it differs from Meteor 1.5 by 5-20% either way (leave-one-out on the test
  references: 0.432 against 0.456; on the fixture's short outputs 0.189 against 0.158).

With Java, all five metrics equal the official scorer's ``measure_scores.py -p`` within 1e-6 on the
systems in ``tests/evaluation/data/e2e_official`` and on the test references (leave-one-out).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Sequence

from .meteor import MeteorUnavailable, meteor_1_5
from .rouge import rouge_l_corpus, rouge_l_segment
from .tokenizers import ptb_tokenize, tokenize_13a

__all__ = ["METRICS", "FALLBACK_NAMES", "bleu", "nist", "cider", "meteor", "meteor_nltk", "rouge_l", "score"]

METRICS = ("bleu", "nist", "meteor", "rouge_l", "cider")
#: A metric that could not be computed as the official scorer does is reported under another name.
FALLBACK_NAMES = {"meteor": "meteor_nltk"}

_BLEU_TINY, _BLEU_SMALL = 1e-15, 1e-9
_NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2
_CIDER_SIGMA = 6.0
#: Meteor 1.5's English parameters (Denkowski & Lavie 2014), used in NLTK's formula (the fallback)
#: instead of its defaults (alpha 0.9, beta 3, gamma 0.5, which score E2E about 0.35 higher: not comparable).
METEOR_PARAMS = {"alpha": 0.85, "beta": 0.20, "gamma": 0.60}


def _ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    return Counter(zip(*(tokens[i:] for i in range(n))))


def _max_ref_counts(refs: Sequence[Sequence[str]], n: int) -> Counter:
    merged: Counter = Counter()
    for ref in refs:
        for gram, c in _ngram_counts(ref, n).items():
            if c > merged[gram]:
                merged[gram] = c
    return merged


def _lower_13a(text: str) -> list[str]:
    return [t.lower() for t in tokenize_13a(text.strip())]


def _mteval_tokens(predictions: Sequence[str], references: Sequence[Sequence[str]]):
    return [_lower_13a(p) for p in predictions], [[_lower_13a(r) for r in refs] for refs in references]


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Corpus BLEU (0-1) as the official E2E scorer's pure-Python mode computes it."""
    return _bleu_tokens(*_mteval_tokens(predictions, references), max_n=max_n)


def _bleu_tokens(pred_tokens, ref_tokens, max_n: int = 4) -> float:
    rows = [bleu_row_counts(hyp, toks, max_n) for hyp, toks in zip(pred_tokens, ref_tokens, strict=True)]
    return bleu_from_counts([sum(column) for column in zip(*rows)] if rows else [0] * (2 * max_n + 1), max_n)


def bleu_row_counts(hyp: Sequence[str], refs: Sequence[Sequence[str]], max_n: int = 4) -> list[int]:
    """One segment's BLEU statistics: clipped n-gram hits (n = 1..max_n), n-gram totals, the closest
    reference length. Corpus BLEU is a function of their sums (:func:`bleu_from_counts`)."""
    hits = []
    for n in range(1, max_n + 1):
        ref_max = _max_ref_counts(refs, n)
        hits.append(sum(min(c, ref_max[g]) for g, c in _ngram_counts(hyp, n).items()))
    totals = [len(hyp) - n + 1 for n in range(1, max_n + 1)]  # may be negative for very short outputs (official quirk)
    ref_len = min((len(t) for t in refs), key=lambda r: (abs(r - len(hyp)), r))
    return [*hits, *totals, ref_len]


def bleu_from_counts(sums: Sequence[float], max_n: int = 4) -> float:
    hits, totals, ref_len = sums[:max_n], sums[max_n : 2 * max_n], sums[2 * max_n]
    log_prec = sum(math.log(max(h, _BLEU_TINY) / max(t, _BLEU_SMALL)) for h, t in zip(hits, totals))
    sys_len = totals[0]
    bp = 1.0 if sys_len > ref_len else math.exp(1.0 - ref_len / (sys_len if sys_len else 1e-5))
    return bp * math.exp(log_prec / max_n)


def row_counts(prediction: str, references: Sequence[str]) -> list[float]:
    """One MR's BLEU statistics and its segment ROUGE-L: BLEU and ROUGE-L of a set of MRs are
    functions of their sums (:func:`metrics_from_counts`), so a bootstrap resamples MRs without
    scoring again (``rosa.results.stats``). NIST, METEOR and CIDEr weigh n-grams by the whole
    corpus and have no such form."""
    (hyp,), (refs,) = _mteval_tokens([prediction.strip()], [[r.strip() for r in references]])
    rouge = rouge_l_segment(ptb_tokenize(prediction.strip()), [ptb_tokenize(r.strip()) for r in references])
    return [*bleu_row_counts(hyp, refs), rouge]


def metrics_from_counts(sums: Sequence[float], n: int) -> dict[str, float]:
    return {"bleu": bleu_from_counts(sums[:9]), "rouge_l": sums[9] / n}


def nist(predictions: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 5) -> float:
    """Corpus NIST as the official E2E scorer's pure-Python mode computes it."""
    return _nist_tokens(*_mteval_tokens(predictions, references), max_n=max_n)


def _nist_tokens(pred_tokens, ref_tokens, max_n: int = 5) -> float:
    ref_counts: Counter = Counter()  # n-gram -> count over all references; () -> total ref tokens
    seg_hits: list[list[Counter]] = []
    totals = [0] * max_n
    avg_ref_len = 0.0
    for hyp, toks in zip(pred_tokens, ref_tokens, strict=True):
        per_order = []
        for n in range(1, max_n + 1):
            ref_max = _max_ref_counts(toks, n)
            per_order.append(Counter({g: min(c, ref_max[g]) for g, c in _ngram_counts(hyp, n).items() if ref_max[g]}))
            totals[n - 1] += len(hyp) - n + 1
            for t in toks:
                ref_counts.update(_ngram_counts(t, n))
        seg_hits.append(per_order)
        lens = [len(t) for t in toks]
        ref_counts[()] += sum(lens)
        avg_ref_len += sum(lens) / len(lens)

    def info(gram: tuple) -> float:
        return math.log2(ref_counts[gram[:-1]] / ref_counts[gram]) if ref_counts[gram] else 0.0

    score = 0.0
    for n in range(max_n):
        gained = sum(info(g) * c for seg in seg_hits for g, c in seg[n].items())
        if totals[n] > 0:
            score += gained / totals[n]
    ratio = totals[0] / avg_ref_len if avg_ref_len else 0.0
    penalty = 1.0 if ratio >= 1 else (0.0 if ratio <= 0 else math.exp(-_NIST_BETA * math.log(ratio) ** 2))
    return penalty * score


def cider(pred_tokens: Sequence[Sequence[str]], ref_tokens: Sequence[Sequence[Sequence[str]]], max_n: int = 4) -> float:
    """Corpus CIDEr-D (x10 scale, as reported by the COCO evaluation) on tokenised text."""

    def grams(toks: Sequence[str]) -> Counter:
        toks = list(toks)
        out: Counter = Counter()
        for n in range(1, max_n + 1):
            out.update(_ngram_counts(toks, n))
        return out

    cooked_refs = [[grams(r) for r in refs] for refs in ref_tokens]
    df: Counter = Counter()
    for refs in cooked_refs:
        df.update({g for r in refs for g in r})
    log_n = math.log(float(len(cooked_refs)))

    def vec(counts: Counter):
        v: list[dict] = [{} for _ in range(max_n)]
        norm = [0.0] * max_n
        length = 0
        for g, tf in counts.items():
            k = len(g) - 1
            w = tf * (log_n - math.log(max(1.0, df[g])))
            v[k][g] = w
            norm[k] += w * w
            if k == 1:  # the COCO code measures length in bigrams
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    scores = []
    for hyp, refs in zip(pred_tokens, cooked_refs, strict=True):
        vh, nh, lh = vec(grams(hyp))
        total = 0.0
        for ref in refs:
            vr, nr, lr = vec(ref)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * _CIDER_SIGMA**2))
            sims = 0.0
            for k in range(max_n):
                rk = vr[k]
                val = 0.0
                for g, w in vh[k].items():
                    r = rk.get(g)
                    if r is not None:
                        val += min(w, r) * r
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                sims += val * penalty
            total += sims / max_n
        scores.append(10.0 * total / len(refs))
    return sum(scores) / len(scores) if scores else 0.0


class _CachedStemmer:
    """Porter stemmer with a cache (NLTK's METEOR stems every word once per reference)."""

    def __init__(self):
        from nltk.stem.porter import PorterStemmer

        self._stemmer = PorterStemmer()
        self._cache: dict[str, str] = {}

    def stem(self, word: str) -> str:
        out = self._cache.get(word)
        if out is None:
            out = self._cache[word] = self._stemmer.stem(word)
        return out


class _CachedSynsets:
    """The one WordNet call NLTK's METEOR makes (``synsets(word)``), cached."""

    def __init__(self, wordnet):
        self._wordnet = wordnet
        self._cache: dict[str, list] = {}

    def synsets(self, word: str):
        out = self._cache.get(word)
        if out is None:
            out = self._cache[word] = self._wordnet.synsets(word)
        return out


def meteor(pred_tokens: Sequence[Sequence[str]], ref_tokens: Sequence[Sequence[Sequence[str]]]) -> float:
    """Corpus Meteor 1.5, as the official scorer runs it (raises MeteorUnavailable without Java)."""
    return meteor_1_5([" ".join(hyp) for hyp in pred_tokens], [[" ".join(r) for r in refs] for refs in ref_tokens])


def meteor_nltk(
    pred_tokens: Sequence[Sequence[str]],
    ref_tokens: Sequence[Sequence[Sequence[str]]],
    wordnet=None,
    *,
    alpha: float = METEOR_PARAMS["alpha"],
    beta: float = METEOR_PARAMS["beta"],
    gamma: float = METEOR_PARAMS["gamma"],
) -> float:
    """Mean segment METEOR from NLTK's ``meteor_score``: the fallback without Java (see module doc).

    Exact, Porter-stem and WordNet-synonym matching, ``Fmean = PR / (alpha P + (1 - alpha) R)``,
    penalty ``gamma (chunks / matches)^beta``, the best reference per segment.  NLTK quirks: words
    left after its stem stage are passed on as stems, so WordNet synonyms are looked up on stems
    ("large" -> "larg": no synonyms); an output identical to a reference of m tokens scores
    ``1 - 0.6 (1/m)^0.2`` rather than 1.
    """
    from nltk.translate.meteor_score import meteor_score

    from .wordnet import load_wordnet

    wn = _CachedSynsets(wordnet if wordnet is not None else load_wordnet())
    stemmer = _CachedStemmer()
    scores = [
        meteor_score(
            [list(r) for r in refs], list(hyp), stemmer=stemmer, wordnet=wn, alpha=alpha, beta=beta, gamma=gamma
        )
        for hyp, refs in zip(pred_tokens, ref_tokens, strict=True)
    ]
    return sum(scores) / len(scores) if scores else 0.0


def rouge_l(pred_tokens: Sequence[Sequence[str]], ref_tokens: Sequence[Sequence[Sequence[str]]]) -> float:
    return rouge_l_corpus(pred_tokens, ref_tokens)


def score(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, with_meteor: bool = True
) -> dict[str, float]:
    """All five E2E metrics.  Without Java, METEOR is NLTK's, named ``meteor_nltk`` (see module doc)."""
    predictions = [p.strip() for p in predictions]
    references = [[r.strip() for r in refs] for refs in references]
    pred_tok = [ptb_tokenize(p) for p in predictions]
    ref_tok = [[ptb_tokenize(r) for r in refs] for refs in references]
    mt_pred, mt_refs = _mteval_tokens(predictions, references)
    out = {"bleu": _bleu_tokens(mt_pred, mt_refs), "nist": _nist_tokens(mt_pred, mt_refs)}
    out.update(_meteor_scores(pred_tok, ref_tok) if with_meteor else {"meteor": float("nan")})
    out.update(rouge_l=rouge_l(pred_tok, ref_tok), cider=cider(pred_tok, ref_tok))
    return {k: float(v) for k, v in out.items()}


def _meteor_scores(pred_tok, ref_tok) -> dict[str, float]:
    """``{"meteor": Meteor 1.5}``, or ``{"meteor_nltk": NLTK's}`` with a warning when Java cannot run it."""
    from .wordnet import WordNetUnavailable

    try:
        return {"meteor": meteor(pred_tok, ref_tok)}
    except MeteorUnavailable as exc:
        warnings.warn(
            f"METEOR: Meteor 1.5 cannot run ({exc}); reporting NLTK's approximation as "
            "meteor_nltk instead (not comparable with the official METEOR)",
            RuntimeWarning,
            stacklevel=3,
        )
    try:
        return {"meteor_nltk": meteor_nltk(pred_tok, ref_tok)}
    except WordNetUnavailable as exc:
        warnings.warn(f"meteor_nltk set to NaN: {exc}", RuntimeWarning, stacklevel=3)
        return {"meteor_nltk": float("nan")}
