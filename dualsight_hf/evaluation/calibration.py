"""Calibration of the authenticity head: temperature scaling, a threshold for a target false-positive rate, and the
"uncertain" band."""

import json

import numpy as np
from scipy.optimize import minimize_scalar

from .metrics import softmax


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """
    The temperature T that minimises the negative log-likelihood of `softmax(logits / T)` on labelled examples
    (Guo et al., 2017). T > 1 softens over-confident predictions; the ranking (AUROC) does not change.

    Args:
        logits (`np.ndarray` of shape `(n, num_labels)`), labels (`np.ndarray` of shape `(n,)`): a validation set.

    Returns:
        `float` in [0.05, 20].
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)

    def nll(log_t):
        probabilities = softmax(logits / np.exp(log_t))
        return -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)).mean()

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def threshold_for_false_positive_rate(real_scores: np.ndarray, target_fpr: float) -> float:
    """
    The lowest threshold on the class-1 (AI-generated) probability that flags at most `target_fpr` of the real
    images (`real_scores`: their class-1 probabilities) as AI-generated.
    """
    scores = np.sort(np.asarray(real_scores, dtype=np.float64))
    allowed = int(np.floor(target_fpr * len(scores)))  # real images that may score at or above the threshold
    if allowed >= len(scores):
        return float(np.nextafter(0.0, 1.0))
    # every score strictly above scores[-allowed - 1] may be flagged; the threshold sits just above it
    return float(min(np.nextafter(scores[len(scores) - allowed - 1], 1.0), 1.0 - 1e-9))


def band_coverage(positive_scores: np.ndarray, labels: np.ndarray, threshold: float, band: float) -> dict:
    """
    What an "uncertain" band of half-width `band` around `threshold` does: the fraction of images decided
    (`coverage`), the accuracy on those, and the accuracy without the band.
    """
    positive_scores, labels = np.asarray(positive_scores), np.asarray(labels)
    decided = np.abs(positive_scores - threshold) >= band
    correct = (positive_scores >= threshold).astype(int) == labels
    return {
        "band": float(band),
        "coverage": float(decided.mean()),
        "accuracy_decided": float(correct[decided].mean()) if decided.any() else float("nan"),
        "accuracy_all": float(correct.mean()),
    }


def calibrate_model(predictor, examples, model_dir, target_fpr: float | None = None,
                    uncertain_band: float | None = None) -> dict:
    """
    Fit the temperature (and, optionally, the threshold for `target_fpr` and an uncertain band) on `examples`, store
    them in `model_dir`'s config, and write `evaluation/calibration.json` and `evaluation/calibration.png`
    (reliability before and after) there.

    Args:
        predictor ([`Predictor`]): the model to calibrate (loaded from `model_dir`).
        examples (`datasets.Dataset`): a validation split (encoded labels); never the test split.
        model_dir (`str` or `Path`): the model folder to update.
        target_fpr (`float`, *optional*): false-positive rate on real images for the decision threshold.
        uncertain_band (`float`, *optional*): half-width of the uncertain band to store.

    Returns:
        `dict`: the fitted values and the expected calibration error before and after.
    """
    from pathlib import Path

    from .evaluate import collect_logits
    from .metrics import expected_calibration_error
    from .plots import plot_reliability_comparison

    config = predictor.model.config
    if (target_fpr is not None or uncertain_band is not None) and config.num_labels != 2:
        raise ValueError("a decision threshold and an uncertain band apply to two-class models only; this one has "
                         f"{config.num_labels} classes")
    logits = collect_logits(predictor, examples, description="calibrating")
    labels = np.asarray(examples.with_format(None)["label"])
    temperature = fit_temperature(logits, labels)
    before, after = softmax(logits), softmax(logits / temperature)
    summary = {
        "temperature": temperature,
        "ece_before": expected_calibration_error(before.max(-1), before.argmax(-1) == labels),
        "ece_after": expected_calibration_error(after.max(-1), after.argmax(-1) == labels),
        "examples": int(len(labels)),
    }
    config.temperature = temperature
    if target_fpr is not None:
        if not (labels == 0).any():
            raise ValueError("choosing a threshold for a false-positive rate needs real (class 0) images")
        config.decision_threshold = threshold_for_false_positive_rate(after[labels == 0, 1], target_fpr)
        summary.update(target_fpr=target_fpr, decision_threshold=config.decision_threshold)
    if uncertain_band is not None:
        config.uncertain_band = uncertain_band
        summary["uncertain_band"] = uncertain_band
    model_dir = Path(model_dir)
    config.save_pretrained(model_dir)
    (model_dir / "evaluation").mkdir(exist_ok=True)
    (model_dir / "evaluation" / "calibration.json").write_text(json.dumps(summary, indent=2))
    plot_reliability_comparison(logits, labels, temperature, model_dir / "evaluation" / "calibration.png")
    return summary
