"""MMSA metric definitions against hand-computed cases (ARCHITECTURE section 8)."""

import math

import numpy as np
import pytest

from mmsa.training.emotion import VALENCE_TARGET, predicted_valence, valence_of
from mmsa.training.metrics import (
    acc7_confusion,
    aggregate,
    better,
    json_safe,
    lookup,
    regression_metrics,
    valence_confusion,
    valence_metrics,
)


def test_regression_metrics_by_hand():
    m = regression_metrics([0, 1, -1, 2], [0, -0.5, -2, 1.5])
    assert m["n"] == 4
    assert m["mae"] == pytest.approx(0.75)  # (0 + 1.5 + 1 + 0.5) / 4
    assert m["corr"] == pytest.approx(2 / math.sqrt(5))  # cov 5, var 5 and 6.25 (sums)
    # Has0: truth >= 0 [T T F T], pred >= 0 [T F F T]
    assert m["acc2_has0"] == pytest.approx(0.75)
    # weighted F1 with the truth first: class T (support 3) F1 0.8, class F (support 1) F1 2/3
    assert m["f1_has0"] == pytest.approx((3 * 0.8 + 1 * 2 / 3) / 4)
    # (pred first would weight by the predicted supports 2 / 2 and give 0.733)
    assert m["f1_has0"] != pytest.approx((2 * 0.8 + 2 * 2 / 3) / 4)
    # Non0 over labels 1, -1, 2: truth > 0 [T F T], pred > 0 [F F T]
    assert m["acc2_non0"] == pytest.approx(2 / 3)
    assert m["f1_non0"] == pytest.approx(2 / 3)
    # Acc-7: round(clip): 0=0, 1 vs round(-0.5)=0, -1 vs -2, 2 vs round(1.5)=2
    assert m["acc7"] == pytest.approx(0.5)
    assert m["acc5"] == pytest.approx(0.5)


def test_label_zero_and_pred_zero_in_both_acc2_conventions():
    m = regression_metrics([0, 0, 1, -1], [0, -0.1, 0, 0])
    # Has0: label 0 is positive, pred 0 is positive: [T T T F] vs [T F T T]
    assert m["acc2_has0"] == pytest.approx(0.5)
    # Non0: label-0 rows dropped; pred 0 is not > 0, so it counts as negative: [T F] vs [F F]
    assert m["acc2_non0"] == pytest.approx(0.5)
    only_zero = regression_metrics([0.0, 0.0], [1.0, -1.0])
    assert math.isnan(only_zero["acc2_non0"]) and math.isnan(only_zero["f1_non0"])
    assert only_zero["acc2_has0"] == pytest.approx(0.5)


def test_acc7_rounds_half_to_even_and_acc5_clips_to_two():
    labels = [0.5, 1.5, 2.5, -0.5, -2.5, 3.4]
    preds = [0.4, 1.6, 2.4, -0.4, -2.6, 2.6]
    m = regression_metrics(labels, preds)
    # half to even: 0.5->0, 1.5->2, 2.5->2, -0.5->0, -2.5->-2 (pred -2.6 -> -3 misses), 3.4 clips to 3
    assert m["acc7"] == pytest.approx(5 / 6)
    # (half away from zero would give 3/6)
    assert m["acc5"] == pytest.approx(1.0)  # clipped to +-2 every pair rounds alike
    cm = acc7_confusion(labels, preds)
    assert cm.sum() == 6 and cm[1, 0] == 1 and np.trace(cm) == 5  # -2.5 -> class -2 (row 1), pred -3 (col 0)


def test_mae_and_corr_use_unclipped_values():
    m = regression_metrics([3.0, -3.0], [5.0, -5.0])
    assert m["mae"] == pytest.approx(2.0)
    assert m["acc7"] == 1.0
    assert math.isnan(regression_metrics([1.0, 2.0], [0.5, 0.5])["corr"])  # constant prediction


def test_valence_mapping_and_metrics():
    assert valence_of("Happy") == "positive"
    assert {valence_of(e) for e in ("sad", "angry", "fearful", "fear", "disgust")} == {"negative"}
    assert valence_of("calm") == valence_of("neutral") == "neutral"
    assert valence_of("surprised") is None and valence_of("surprise") is None
    assert VALENCE_TARGET == {"negative": -2.0, "neutral": 0.0, "positive": 2.0}
    # the one polarity rule (mmsa.common.scale): |pred| < 0.5 is neutral, as for a ScoreEvent
    assert [predicted_valence(p) for p in (-0.51, -0.5, -0.49, 0.49, 0.5, 0.51)] == [
        "negative", "negative", "neutral", "neutral", "positive", "positive"]

    valences = ["positive", "positive", "negative", "negative", "neutral", "neutral", None]
    preds = [1.0, 0.2, -1.0, 0.3, 0.0, 0.7, 2.5]
    m = valence_metrics(valences, preds)
    assert m["n"] == 6  # surprise left out
    # predicted: pos, neu | neg, neu | neu, pos -> recall 1/2 for each class
    assert m["valence_uar3"] == pytest.approx(0.5)
    # sign accuracy over pos/neg rows: 1.0 > 0, 0.2 > 0, -1 < 0, 0.3 not < 0
    assert m["valence_acc2"] == pytest.approx(0.75)
    assert valence_metrics(["positive"], [0.0])["valence_acc2"] == 0.0  # exactly 0 is no sign
    cm = valence_confusion(valences, preds)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [0, 1, 1]]


def test_uar_ignores_classes_absent_from_the_truth():
    m = valence_metrics(["positive", "positive", "negative"], [1.0, -1.0, -1.0])
    assert m["valence_uar3"] == pytest.approx((0.5 + 1.0) / 2)


def test_aggregate_mean_and_population_std_over_seeds():
    runs = [{"mae": 1.0, "acc7": 0.5, "unimodal": {"text": {"mae": 2.0}}},
            {"mae": 0.8, "acc7": 0.7, "unimodal": {"text": {"mae": 1.0}}}]
    agg = aggregate(runs)
    assert agg["n_runs"] == 2
    assert agg["mean"]["mae"] == pytest.approx(0.9) and agg["std"]["mae"] == pytest.approx(0.1)
    assert agg["mean"]["unimodal"]["text"]["mae"] == pytest.approx(1.5)
    assert agg["std"]["unimodal"]["text"]["mae"] == pytest.approx(0.5)


def test_selection_helpers_and_json():
    assert better("mosi_valid.mae", 0.8, 0.9) and not better("mosi_valid.mae", 0.9, 0.8)
    assert better("mosi_valid.acc7", 0.5, 0.4) and not better("x.acc7", float("nan"), None)
    assert better("x.mae", 1.0, None)
    assert lookup({"a": {"unimodal": {"text": {"mae": 0.7}}}}, "a.unimodal.text.mae") == 0.7
    with pytest.raises(KeyError):
        lookup({"a": {}}, "a.mae")
    assert json_safe({"x": float("nan"), "y": [np.float32(1.5)], "n": np.int64(3)}) == {"x": None, "y": [1.5], "n": 3}
