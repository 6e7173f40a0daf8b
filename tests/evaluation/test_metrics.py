import numpy as np
import pytest

from dualsight_hf.evaluation.metrics import (
    DualSightMetrics,
    authenticity_metrics,
    expected_calibration_error,
    grouped_authenticity_metrics,
    object_metrics,
)


def logits_for(probabilities_of_class_1):
    p = np.asarray(probabilities_of_class_1, dtype=np.float64)
    return np.stack([np.zeros_like(p), np.log(p / (1 - p))], axis=1)


def test_authenticity_metrics_against_hand_computed_values():
    # p(ai) = .9 .8 .4 .3 .6 .2 ; truth 1 1 1 0 0 0 -> predictions 1 1 0 0 1 0
    logits = logits_for([0.9, 0.8, 0.4, 0.3, 0.6, 0.2])
    labels = np.array([1, 1, 1, 0, 0, 0])
    m = authenticity_metrics(logits, labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)  # TP=2, FP=1
    assert m["recall"] == pytest.approx(2 / 3)  # TP=2, FN=1
    assert m["f1"] == pytest.approx(2 / 3)
    # AUROC: positive scores .9 .8 .4 vs negatives .3 .6 .2: 8 of 9 pairs ordered right
    assert m["auroc"] == pytest.approx(8 / 9)
    assert m["count"] == 6


def test_balanced_accuracy_weighs_each_class_alike():
    # 4 AI images all right, 1 real image wrong: accuracy 0.8, balanced accuracy (1 + 0) / 2
    m = authenticity_metrics(logits_for([0.9, 0.8, 0.7, 0.6, 0.9]), np.array([1, 1, 1, 1, 0]))
    assert m["accuracy"] == pytest.approx(0.8) and m["balanced_accuracy"] == pytest.approx(0.5)


def test_ignored_labels_are_dropped():
    logits = logits_for([0.9, 0.1, 0.7])
    assert authenticity_metrics(logits, np.array([1, 0, -100]))["count"] == 2


def test_expected_calibration_error_by_hand():
    # two bins used (15 bins): confidences .95 (3 examples, 2 right) and .55 (1, right)
    confidence = np.array([0.95, 0.95, 0.95, 0.55])
    correct = np.array([1, 1, 0, 1])
    expected = 0.75 * abs(2 / 3 - 0.95) + 0.25 * abs(1 - 0.55)
    assert expected_calibration_error(confidence, correct) == pytest.approx(expected)


def test_multi_label_object_metrics_by_hand():
    truth = np.array([[1, 0], [0, 1], [1, 1], [-100, -100]])
    logits = np.array([[3.0, -3.0], [-3.0, -3.0], [3.0, 3.0], [0.0, 0.0]])
    m = object_metrics(logits, truth, "multi_label_classification")
    # predicted: [1,0] [0,0] [1,1]: TP=3, FP=0, FN=1 -> micro F1 = 6/7
    assert m["micro_f1"] == pytest.approx(6 / 7)
    assert m["macro_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert m["count"] == 3
    assert "per_class" not in m
    per_class = object_metrics(logits, truth, "multi_label_classification", names={0: "cat", 1: "dog"})["per_class"]
    assert per_class["cat"] == {"average_precision": 1.0, "f1": 1.0, "count": 2}
    # dog: scores high, low, low for truth 1 at row 3 and a tie of a positive and a negative: AP = .5 * 1 + .5 * 2/3
    assert per_class["dog"]["average_precision"] == pytest.approx(0.5 + 1 / 3)
    assert per_class["dog"]["f1"] == pytest.approx(2 / 3) and per_class["dog"]["count"] == 2


def test_single_label_object_accuracy():
    m = object_metrics(np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]), np.array([0, 0, -100]),
                       "single_label_classification")
    assert m == {"accuracy": 0.5, "count": 2}


def test_grouped_metrics():
    logits = logits_for([0.9, 0.2, 0.3, 0.4])
    grouped = grouped_authenticity_metrics(logits, np.array([1, 0, 1, 0]), ["a", "a", "b", "b"])
    assert grouped["a"]["accuracy"] == 1.0 and grouped["b"]["accuracy"] == 0.5


def test_trainer_compute_metrics_reads_both_heads():
    from conftest import tiny_config
    from transformers import EvalPrediction

    prediction = EvalPrediction(predictions=(logits_for([0.9, 0.1]), np.array([[3.0, -3.0, -3.0]] * 2)),
                                label_ids=(np.array([1, 0]), np.array([[1, 0, 0], [1, 0, 0]])))
    metrics = DualSightMetrics(tiny_config())(prediction)
    assert metrics["accuracy"] == 1.0 and metrics["objects_micro_f1"] == 1.0


def test_three_classes_average_over_the_classes_present():
    # classes 0 and 2 present, 1 absent; predictions all right
    logits = np.array([[5.0, 0, 0], [5.0, 0, 0], [0, 0, 5.0], [0, 0, 5.0]])
    m = authenticity_metrics(logits, np.array([0, 0, 2, 2]))
    assert m["accuracy"] == m["recall"] == m["precision"] == m["f1"] == 1.0
    assert m["auroc"] == 1.0


def test_no_labelled_example_gives_nan_not_an_error():
    m = authenticity_metrics(np.zeros((2, 2)), np.array([-100, -100]))
    assert m["count"] == 0 and np.isnan(m["accuracy"])
