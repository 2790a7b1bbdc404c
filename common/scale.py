"""The sentiment scale, defined once: the range of every score, the polarity rule, the modalities.

Scores are on the CMU-MOSI scale, -3 (very negative) .. +3 (very positive). The polarity rule
is the ScoreEvent contract's (ARCHITECTURE section 5): ``|score| < 0.5`` is neutral, so a score
of exactly +0.5 is positive and -0.5 negative. Every place that classifies a score or a label
(the ScoreEvent, the dashboard and report colours, the valence metrics of ``mmsa-eval``, the
valence classes of the face head's loss) imports this module; none writes the rule again.

(ARCHITECTURE section 8 words the metric's rule as "positive if pred > 0.5"; the two wordings
differ only at exactly +-0.5, and we follow section 5's everywhere, so an event's polarity and
the class ``mmsa-eval`` counts for the same score always agree.)

It lives in ``mmsa.common`` (standard library only), not in ``mmsa.model``, so that tools which
only read scores (``mmsa-monitor watch``, the report) never import torch.
"""

from __future__ import annotations

SCORE_MIN = -3.0
SCORE_MAX = 3.0
SCORE_RANGE = SCORE_MAX  # symmetric: scores are SCORE_RANGE * tanh(raw / SCORE_RANGE)
NEUTRAL_BAND = 0.5  # |score| < NEUTRAL_BAND is neutral
POLARITIES = ("negative", "neutral", "positive")  # class index 0, 1, 2
MODALITIES = ("text", "audio", "vision")  # the order of the model's presence flags and unimodal heads


def polarity_of(score: float) -> str:
    """negative | neutral | positive: neutral iff |score| < 0.5."""
    return POLARITIES[polarity_index(score)]


def polarity_index(score: float) -> int:
    """0 negative, 1 neutral, 2 positive (the polarity rule; ``network.valence_class`` is its tensor form)."""
    if abs(score) < NEUTRAL_BAND:
        return 1
    return 2 if score > 0 else 0


def clip_score(score: float) -> float:
    """The score clipped into [SCORE_MIN, SCORE_MAX]."""
    return max(SCORE_MIN, min(SCORE_MAX, score))
