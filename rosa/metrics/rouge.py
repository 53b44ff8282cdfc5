"""ROUGE-L as the COCO caption evaluation (and hence the official E2E scorer) computes it.

Per segment: the longest common subsequence (LCS) of tokens with each reference gives a precision
``lcs/len(candidate)`` and a recall ``lcs/len(reference)``; the *maximum* precision and the
*maximum* recall over the references (taken separately) are combined as
``F = (1 + b^2) P R / (R + b^2 P)`` with ``b = 1.2``.  The corpus score is the mean over segments.
Token lists are joined and re-split on single spaces, so an empty text counts as one empty token
(as the COCO code does with ``"".split(" ")``).
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["lcs_length", "rouge_l_segment", "rouge_l_corpus", "ROUGE_BETA"]

ROUGE_BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences.

    Bit-parallel algorithm (Crochemore et al. 2001 / Hyyro 2004): one machine-word-style
    big-integer update per token of the shorter sequence, so long ELI5 answers stay fast.
    """
    if len(a) < len(b):
        a, b = b, a
    m = len(a)
    if m == 0 or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << m) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def _as_coco_tokens(tokens: Sequence[str]) -> list[str]:
    return " ".join(tokens).split(" ")


def rouge_l_segment(candidate: Sequence[str], references: Sequence[Sequence[str]], beta: float = ROUGE_BETA) -> float:
    """ROUGE-L F of one tokenised candidate against tokenised references (max P, max R)."""
    if not references:
        raise ValueError("rouge_l_segment needs at least one reference")
    cand = _as_coco_tokens(candidate)
    best_p = best_r = 0.0
    for ref in references:
        ref = _as_coco_tokens(ref)
        lcs = lcs_length(cand, ref)
        best_p = max(best_p, lcs / len(cand))
        best_r = max(best_r, lcs / len(ref))
    if best_p == 0.0 or best_r == 0.0:
        return 0.0
    return (1 + beta**2) * best_p * best_r / (best_r + beta**2 * best_p)


def rouge_l_corpus(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> float:
    """Mean segment ROUGE-L F over the corpus."""
    scores = [rouge_l_segment(c, r) for c, r in zip(candidates, references, strict=True)]
    return sum(scores) / len(scores) if scores else 0.0
