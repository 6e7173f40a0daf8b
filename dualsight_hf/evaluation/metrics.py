"""Metrics of both heads, computed with scikit-learn (no metric script is fetched from the Hub)."""

import numpy as np
from sklearn import metrics as skm


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, num_bins: int = 15) -> float:
    """
    Expected calibration error: the mean |accuracy - confidence| over equal-width confidence bins, weighted by the
    fraction of examples in each bin.

    Args:
        confidence (`np.ndarray` of shape `(n,)`): the probability of the predicted class.
        correct (`np.ndarray` of shape `(n,)`): whether the prediction was right.
        num_bins (`int`, *optional*, defaults to 15)
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def authenticity_metrics(logits: np.ndarray, labels: np.ndarray, positive_label: int = 1) -> dict:
    """
    Accuracy, balanced accuracy (the mean recall of the classes present), precision, recall and F1 (class
    `positive_label`, AI-generated, as the positive class; macro averages over the classes present for more than two
    classes), AUROC (one-vs-rest mean for more than two) and expected calibration error. All NaN, with `count` 0,
    when no example has a label.

    Args:
        logits (`np.ndarray` of shape `(n, num_labels)`): authenticity logits.
        labels (`np.ndarray` of shape `(n,)`): true class ids; `-100` rows are ignored.
        positive_label (`int`, *optional*, defaults to 1): the class treated as positive in two-class problems.

    Returns:
        `dict[str, float]`: `accuracy`, `balanced_accuracy`, `precision`, `recall`, `f1`, `auroc`, `ece`, `count`.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    keep = labels != -100
    if not keep.any():
        return {key: float("nan") for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc",
                                              "ece")} | {"count": 0}
    probabilities, labels = softmax(logits[keep]), labels[keep]
    predictions = probabilities.argmax(axis=-1)
    binary = probabilities.shape[1] == 2
    present = sorted(np.unique(labels).tolist())  # classes absent from this subset are not averaged in
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predictions, average="binary" if binary else "macro", pos_label=positive_label, zero_division=0,
        labels=None if binary else present,
    )
    if len(present) < 2:
        auroc = float("nan")
    elif binary:
        auroc = skm.roc_auc_score(labels == positive_label, probabilities[:, positive_label])
    else:  # one-vs-rest over the classes present, each against all others
        auroc = float(np.mean([skm.roc_auc_score(labels == c, probabilities[:, c]) for c in present]))
    confidence = probabilities.max(axis=-1)
    return {
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "balanced_accuracy": float(np.mean([(predictions[labels == c] == c).mean() for c in present])),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auroc": float(auroc),
        "ece": expected_calibration_error(confidence, predictions == labels),
        "count": int(keep.sum()),
    }


def object_metrics(object_logits: np.ndarray, object_labels: np.ndarray, problem_type: str,
                   threshold: float = 0.5, names: dict[int, str] | None = None) -> dict:
    """
    Object-head metrics over the examples that have object labels.

    Multi-label: micro and macro F1 at `threshold`, and mean average precision over the classes that occur; with
    `names`, also `per_class`: the average precision, F1 and number of positive examples of each class that occurs.
    Single-label: accuracy.

    Args:
        object_logits (`np.ndarray`): `(n, num_object_labels)` logits.
        object_labels (`np.ndarray`): multi-hot `(n, num_object_labels)` with `-100` for unknown rows, or `(n,)` ids
            with `-100` for none.
        problem_type (`str`): the config's `object_problem_type`.
        threshold (`float`, *optional*, defaults to 0.5): presence threshold of the multi-label head.
        names (`dict[int, str]`, *optional*): class names by index (the config's `object_id2label`).
    """
    object_logits, object_labels = np.asarray(object_logits), np.asarray(object_labels)
    if problem_type == "single_label_classification":
        keep = object_labels != -100
        if not keep.any():
            return {"count": 0}
        predictions = object_logits[keep].argmax(axis=-1)
        return {"accuracy": float((predictions == object_labels[keep]).mean()), "count": int(keep.sum())}
    keep = (object_labels != -100).all(axis=-1)
    if not keep.any():
        return {"count": 0}
    truth = object_labels[keep].astype(int)
    scores = sigmoid(object_logits[keep])
    predicted = (scores >= threshold).astype(int)
    occurring = truth.sum(axis=0) > 0
    mean_ap = (skm.average_precision_score(truth[:, occurring], scores[:, occurring], average="macro")
               if occurring.any() else float("nan"))
    result = {
        "micro_f1": float(skm.f1_score(truth, predicted, average="micro", zero_division=0)),
        "macro_f1": float(skm.f1_score(truth[:, occurring], predicted[:, occurring], average="macro",
                                       zero_division=0)) if occurring.any() else float("nan"),
        "mean_average_precision": float(mean_ap),
        "count": int(keep.sum()),
    }
    if names is not None:
        result["per_class"] = {
            names[index]: {"average_precision": float(skm.average_precision_score(truth[:, index], scores[:, index])),
                           "f1": float(skm.f1_score(truth[:, index], predicted[:, index], zero_division=0)),
                           "count": int(truth[:, index].sum())}
            for index in np.flatnonzero(occurring)}
    return result


def grouped_authenticity_metrics(logits: np.ndarray, labels: np.ndarray, groups) -> dict:
    """`authenticity_metrics` for each distinct value of `groups` (e.g. the `source` column)."""
    groups = np.asarray(groups)
    return {str(g): authenticity_metrics(logits[groups == g], labels[groups == g]) for g in sorted(set(groups))}


class DualSightMetrics:
    """
    `compute_metrics` for `Trainer`: reads the authenticity logits and, when present, the object logits from an
    `EvalPrediction` (Trainer gives tuples when the model has several outputs and label fields).

    Args:
        config ([`DualSightConfig`]): tells the object problem type.
        object_threshold (`float`, *optional*, defaults to 0.5)
    """

    def __init__(self, config, object_threshold: float = 0.5):
        self.config = config
        self.object_threshold = object_threshold

    def __call__(self, prediction) -> dict:
        outputs = prediction.predictions if isinstance(prediction.predictions, tuple) else (prediction.predictions,)
        labels = prediction.label_ids if isinstance(prediction.label_ids, tuple) else (prediction.label_ids,)
        result = authenticity_metrics(outputs[0], labels[0])
        result.pop("count")
        if len(outputs) > 1 and len(labels) > 1:
            objects = object_metrics(outputs[1], labels[1], self.config.object_problem_type, self.object_threshold)
            result.update({f"objects_{key}": value for key, value in objects.items() if key != "count"})
        return result
