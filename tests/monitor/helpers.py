"""Small helpers of the monitor tests."""

from __future__ import annotations

from collections import Counter

from mmsa.model.features import normalize_text


def words(text: str) -> list[str]:
    return normalize_text(text).split()


def word_recall(reference: str, hypothesis: str) -> float:
    """Fraction of the reference words found in the hypothesis (each hypothesis word used once)."""
    have = Counter(words(hypothesis))
    ref = words(reference)
    hit = 0
    for w in ref:
        if have[w] > 0:
            have[w] -= 1
            hit += 1
    return hit / max(len(ref), 1)
