"""The one place that maps emotion categories (RAVDESS, FER2013) to valence and to a training target.

ARCHITECTURE section 8 and ../shared/data/README.md: emotion data carries categories, not the
MOSI sentiment scale, so the audio and face branches learn from this explicit mapping:

* valence: happy -> positive; sad, angry, fearful/fear, disgust -> negative; neutral, calm ->
  neutral; surprise(d) has no valence: it is left out of training and of the valence metrics
  (it still appears in the predictions CSV, with an empty valence).
* training target on the MOSI scale: positive +2, neutral 0, negative -2. Why 2: it is the
  MOSI "positive" / "negative" grade (3 is "strongly"); acted emotions are clear but a face or a
  voice alone rarely carries MOSI's extremes, and +-2 keeps targets inside the tanh range of
  the head instead of pushing it into saturation.
* predicted class: the polarity rule of :mod:`mmsa.model.scale` (neutral iff |pred| < 0.5), the
  same rule as the monitor's ScoreEvent polarity (ARCHITECTURE section 5).
"""

from __future__ import annotations

from mmsa.common.scale import POLARITIES, polarity_of

VALENCES = POLARITIES  # the valence classes are the polarity classes

EMOTION_VALENCE: dict[str, str | None] = {
    "happy": "positive",
    "sad": "negative",
    "angry": "negative",
    "fearful": "negative",  # RAVDESS spelling
    "fear": "negative",  # FER2013 spelling
    "disgust": "negative",
    "neutral": "neutral",
    "calm": "neutral",
    "surprised": None,  # RAVDESS
    "surprise": None,  # FER2013
}

VALENCE_TARGET = {"negative": -2.0, "neutral": 0.0, "positive": 2.0}


def valence_of(emotion: str) -> str | None:
    """Valence class of an emotion name; None for surprise. KeyError for an unknown emotion."""
    return EMOTION_VALENCE[emotion.strip().lower()]


def predicted_valence(pred: float) -> str:
    """negative / neutral / positive of a predicted score (the polarity rule)."""
    return polarity_of(pred)
