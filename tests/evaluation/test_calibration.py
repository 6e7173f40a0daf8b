import numpy as np
import pytest

from dualsight_hf import DualSightConfig
from dualsight_hf.evaluation.calibration import band_coverage, fit_temperature, threshold_for_false_positive_rate
from dualsight_hf.evaluation.metrics import expected_calibration_error, softmax
from dualsight_hf.models.pipeline import UNCERTAIN, authenticity_decision, authenticity_predictions


def over_confident_set(n=4000, seed=0):
    """Labels drawn from true probabilities p, logits that claim 4x the true log-odds: badly over-confident."""
    rng = np.random.default_rng(seed)
    true_log_odds = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true_log_odds))).astype(int)
    logits = np.stack([np.zeros(n), 4 * true_log_odds], axis=1)
    return logits, labels


def ece(logits, labels):
    probabilities = softmax(logits)
    return expected_calibration_error(probabilities.max(-1), probabilities.argmax(-1) == labels)


def test_temperature_scaling_recovers_the_scale_and_lowers_ece():
    logits, labels = over_confident_set()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(4.0, rel=0.15)
    assert ece(logits / temperature, labels) < ece(logits, labels) / 3
    held_out_logits, held_out_labels = over_confident_set(seed=1)  # and it carries over to fresh data
    assert ece(held_out_logits / temperature, held_out_labels) < ece(held_out_logits, held_out_labels) / 3


def test_threshold_for_a_target_false_positive_rate():
    real_scores = np.linspace(0.0, 0.99, 100)
    threshold = threshold_for_false_positive_rate(real_scores, 0.05)
    assert (real_scores >= threshold).mean() == pytest.approx(0.05)
    assert (real_scores >= threshold - 0.02).mean() > 0.05  # the lowest such threshold
    assert (real_scores >= threshold_for_false_positive_rate(real_scores, 0.0)).sum() == 0


def test_uncertain_band_decisions_and_coverage():
    config = DualSightConfig(decision_threshold=0.7, uncertain_band=0.1)
    log_odds = lambda p: np.array([0.0, np.log(p / (1 - p))])  # noqa: E731
    assert authenticity_decision(log_odds(0.95), config)[0] == "ai_generated"
    assert authenticity_decision(log_odds(0.65), config) == (UNCERTAIN, pytest.approx(0.65))
    assert authenticity_decision(log_odds(0.55), config)[0] == "real"
    assert authenticity_decision(log_odds(0.65), config, uncertain_band=0.0)[0] == "real"
    scores, labels = np.array([0.1, 0.45, 0.55, 0.9]), np.array([0, 1, 0, 1])
    assert band_coverage(scores, labels, 0.5, 0.1) == {"band": 0.1, "coverage": 0.5, "accuracy_decided": 1.0,
                                                        "accuracy_all": 0.5}


def test_temperature_changes_reported_probabilities_not_the_ranking():
    config = DualSightConfig(temperature=2.0)
    predictions = authenticity_predictions(np.array([0.0, 2.0]), config)
    assert predictions[0] == {"label": "ai_generated", "score": pytest.approx(1 / (1 + np.exp(-1.0)))}
