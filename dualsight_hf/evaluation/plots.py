"""Training and evaluation plots (PNG), saved beside a model."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from .metrics import softmax  # noqa: E402


def plot_training_curves(log_history: list[dict], path) -> Path:
    """Loss (train and validation) and validation accuracy/AUROC per epoch, from `Trainer.state.log_history`."""
    train = [(e["epoch"], e["loss"]) for e in log_history if "loss" in e and "epoch" in e]
    evals = [e for e in log_history if "eval_loss" in e]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        loss_axis.plot(*zip(*train), label="train", alpha=0.7)
    if evals:
        loss_axis.plot([e["epoch"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation")
        for key in ("eval_accuracy", "eval_auroc"):
            if key in evals[0]:
                metric_axis.plot([e["epoch"] for e in evals], [e[key] for e in evals], "o-", label=key[5:])
    loss_axis.set(xlabel="epoch", ylabel="loss", title="Loss")
    metric_axis.set(xlabel="epoch", ylabel="score", title="Validation authenticity", ylim=(0, 1.02))
    for axis in (loss_axis, metric_axis):
        if axis.get_legend_handles_labels()[1]:  # a run without evaluations has no validation curve to name
            axis.legend()
    return _save(figure, path)


def plot_confusion_matrix(logits: np.ndarray, labels: np.ndarray, label_names: list[str], path) -> Path:
    """Confusion matrix of the authenticity head (rows: true class, columns: predicted)."""
    matrix = skm.confusion_matrix(labels, np.asarray(logits).argmax(-1), labels=list(range(len(label_names))))
    figure, axis = plt.subplots(figsize=(4.5, 4))
    skm.ConfusionMatrixDisplay(matrix, display_labels=label_names).plot(ax=axis, colorbar=False)
    axis.set_title("Authenticity confusion matrix")
    return _save(figure, path)


def plot_roc_curve(logits: np.ndarray, labels: np.ndarray, path, positive_label: int = 1) -> Path:
    """ROC curve of the authenticity head, `positive_label` (AI-generated) as positive."""
    scores = softmax(logits)[:, positive_label]
    figure, axis = plt.subplots(figsize=(4.5, 4))
    skm.RocCurveDisplay.from_predictions(np.asarray(labels) == positive_label, scores, ax=axis)
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    axis.set_title("Authenticity ROC")
    return _save(figure, path)


def _reliability_axis(axis, probabilities: np.ndarray, labels: np.ndarray, title: str, num_bins: int) -> None:
    confidence = probabilities.max(-1)
    correct = probabilities.argmax(-1) == np.asarray(labels)
    edges = np.linspace(0, 1, num_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, num_bins - 1)
    accuracy = [correct[bins == b].mean() if (bins == b).any() else np.nan for b in range(num_bins)]
    axis.bar((edges[:-1] + edges[1:]) / 2, accuracy, width=1 / num_bins, edgecolor="black", alpha=0.7,
             label="accuracy")
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfect calibration")
    axis.set(xlabel="confidence", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))


def plot_reliability_diagram(logits: np.ndarray, labels: np.ndarray, path, num_bins: int = 15,
                             title: str = "Reliability") -> Path:
    """Accuracy against confidence of the predicted authenticity class, per confidence bin."""
    figure, axis = plt.subplots(figsize=(4.5, 4))
    _reliability_axis(axis, softmax(logits), labels, title, num_bins)
    axis.legend()
    return _save(figure, path)


def plot_reliability_comparison(logits: np.ndarray, labels: np.ndarray, temperature: float, path,
                                num_bins: int = 15) -> Path:
    """Reliability diagrams before (T = 1) and after temperature scaling, side by side."""
    figure, axes = plt.subplots(1, 2, figsize=(9, 4))
    _reliability_axis(axes[0], softmax(np.asarray(logits)), labels, "before calibration", num_bins)
    _reliability_axis(axes[1], softmax(np.asarray(logits) / temperature), labels,
                      f"after (T = {temperature:.2f})", num_bins)
    return _save(figure, path)


def plot_degradations(rows: list[dict], path) -> Path:
    """Accuracy (at the model's threshold) and AUROC per degradation level, from `evaluate.evaluate`; one line per
    degradation, its levels side by side in the order evaluated."""
    figure, (accuracy_axis, auroc_axis) = plt.subplots(1, 2, figsize=(14, 4))
    positions = {id(row): index for index, row in enumerate(rows)}
    for name in dict.fromkeys(row["degradation"] for row in rows):
        chosen = [row for row in rows if row["degradation"] == name]
        x = [positions[id(row)] for row in chosen]
        accuracy_axis.plot(x, [row["accuracy_at_threshold"] for row in chosen], "o-", label=name)
        auroc_axis.plot(x, [row["auroc"] for row in chosen], "o-", label=name)
    labels = [f"{row['degradation']}\n{row['level']:g}" for row in rows]
    for axis, title, ylabel in ((accuracy_axis, "Accuracy under degradation", "accuracy"),
                                (auroc_axis, "AUROC under degradation", "AUROC")):
        axis.set_xticks(range(len(rows)), labels, fontsize=8)
        axis.set(title=title, ylabel=ylabel, ylim=(0, 1.02))
    accuracy_axis.legend()
    return _save(figure, path)


def _save(figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
