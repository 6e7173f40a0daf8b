"""`dualsight evaluate`: how far to trust a model on given data, per group, under degradations, calibrated."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .calibration import band_coverage
from .data import drop_unreadable, encode_labels, image_source, load_examples, split_examples
from .degradations import degrade
from .images import load_image
from .metrics import authenticity_metrics, softmax


@dataclass
class EvaluationData:
    """
    Which examples to evaluate on.

    Args:
        data (`str`): image folder, manifest or `datasets` dataset (as in training).
        split (`str`, *optional*, defaults to `"test"`): `train`, `validation` or `test` of the seeded split that
            training makes with the same settings, or `all`.
        validation_size, test_size (`float`), split_seed (`int`), stratify_by (`str`), holdout_column,
            holdout_value (`str`): the split settings, as in training (those of `recipes/default_model.yaml` by
            default); with a held-out group, `test` is that group.
        dataset_split, image_column, label_column (`str`): for `datasets` sources.
    """

    data: str
    split: str = "test"
    validation_size: float = 0.15
    test_size: float = 0.15
    split_seed: int = 42
    stratify_by: str | None = "source"
    holdout_column: str | None = None
    holdout_value: str | None = None
    dataset_split: str = "train"
    image_column: str = "image"
    label_column: str = "label"

    def load(self, config):
        """The chosen examples, readable ones only, labels encoded for `config`."""
        table, _ = drop_unreadable(load_examples(self.data, self.dataset_split, self.image_column, self.label_column))
        table = encode_labels(table, config)
        if self.split == "all":
            return table
        stratify = self.stratify_by if self.stratify_by in table.column_names else None
        return split_examples(table, self.validation_size, self.test_size, self.split_seed, stratify,
                              self.holdout_column, self.holdout_value)[self.split]


def collect_logits(predictor, examples, condition: tuple[str, float] | None = None, progress: bool = True,
                   description: str = "evaluating") -> np.ndarray:
    """Authenticity logits of every example, after applying `condition` (`(name, level)`) to each image."""
    rows, batch = [], []
    images = examples.with_format(None)["image"]

    def flush():
        pixels = predictor.image_processor(batch, return_tensors="pt")["pixel_values"]
        rows.append(predictor.forward(pixels)[0].numpy())
        batch.clear()

    for index, source in enumerate(tqdm(images, desc=description, unit="img", disable=not progress, leave=False)):
        image = load_image(image_source(source))
        batch.append(degrade(image, *condition, seed=index) if condition else image)
        if len(batch) == predictor.batch_size:
            flush()
    if batch:
        flush()
    return np.concatenate(rows) if rows else np.zeros((0, predictor.model.config.num_labels))


def _decision_accuracy(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    if probabilities.shape[1] != 2:
        return float((probabilities.argmax(-1) == labels).mean())
    return float(((probabilities[:, 1] >= threshold).astype(int) == labels).mean())


def evaluate(predictor, examples, perturbations: list[tuple[str, float]], group_by: str | None = None,
             progress: bool = True) -> dict:
    """
    Metrics of the authenticity head on `examples`, clean and under each degradation.

    Args:
        predictor ([`Predictor`]): the model (its config's temperature, threshold and band are used).
        examples (`datasets.Dataset`): rows with `image` and an encoded `label`.
        perturbations (`list[tuple[str, float]]`): `(name, level)` pairs, see `degradations.parse_perturbation`.
        group_by (`str`, *optional*): column to break the clean metrics down by (e.g. `source`).
        progress (`bool`, *optional*, defaults to `True`): progress bars.

    Returns:
        `dict` with `clean` (raw and calibrated metrics, per group), `degradations` (accuracy at the model's
        threshold and AUROC per condition), `uncertain_band` (coverage and accuracy) and `settings`.
    """
    config = predictor.model.config
    labels = np.asarray(examples.with_format(None)["label"])
    threshold = config.decision_threshold or 0.5
    logits = collect_logits(predictor, examples, progress=progress, description="clean")
    calibrated = logits / config.temperature
    clean = {"raw": authenticity_metrics(logits, labels), "calibrated": authenticity_metrics(calibrated, labels)}
    clean["calibrated"]["accuracy_at_threshold"] = _decision_accuracy(softmax(calibrated), labels, threshold)
    if group_by and group_by in examples.column_names:
        groups = np.asarray(examples.with_format(None)[group_by])
        clean["by_" + group_by] = {
            str(g): {**authenticity_metrics(calibrated[groups == g], labels[groups == g]),
                     "accuracy_at_threshold": _decision_accuracy(softmax(calibrated[groups == g]),
                                                                 labels[groups == g], threshold)}
            for g in sorted(set(groups))
        }
    degradations = []
    for name, level in perturbations:
        degraded = collect_logits(predictor, examples, (name, level), progress, f"{name} {level:g}") / \
            config.temperature
        metrics = authenticity_metrics(degraded, labels)
        degradations.append({"degradation": name, "level": level, "auroc": metrics["auroc"],
                             "accuracy_at_threshold": _decision_accuracy(softmax(degraded), labels, threshold),
                             "ece": metrics["ece"]})
    result = {"clean": clean, "degradations": degradations,
              "settings": {"temperature": config.temperature, "decision_threshold": threshold,
                           "uncertain_band": config.uncertain_band, "count": int(len(labels))}}
    if config.num_labels == 2:
        positive = softmax(calibrated)[:, 1]
        result["uncertain_band"] = [band_coverage(positive, labels, threshold, band)
                                    for band in sorted({0.0, 0.05, 0.1, 0.2, config.uncertain_band})]
        result["raw_logits"] = logits.tolist()
        result["labels"] = labels.tolist()
    return result


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _f(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def markdown_report(result: dict, title: str = "Evaluation") -> str:
    """The report as Markdown: clean metrics, per group, the degradation table and the uncertain band."""
    clean, settings = result["clean"], result["settings"]
    lines = [f"### {title}\n",
             f"{settings['count']} images; temperature {settings['temperature']:.3f}, decision threshold "
             f"{settings['decision_threshold']:.3f} on P(ai_generated), uncertain band "
             f"+/-{settings['uncertain_band']:.2f}.\n",
             _row(["condition", "accuracy", "AUROC", "ECE"]), _row(["---"] * 4),
             _row(["clean, raw (argmax)", _f(clean["raw"]["accuracy"]), _f(clean["raw"]["auroc"]),
                   _f(clean["raw"]["ece"])]),
             _row(["clean, calibrated", _f(clean["calibrated"]["accuracy_at_threshold"]),
                   _f(clean["calibrated"]["auroc"]), _f(clean["calibrated"]["ece"])])]
    lines += [_row([f"{d['degradation']} {d['level']:g}", _f(d["accuracy_at_threshold"]), _f(d["auroc"]),
                    _f(d["ece"])]) for d in result["degradations"]]
    groups = next((k for k in clean if k.startswith("by_")), None)
    if groups:
        lines += ["", f"Clean, calibrated, per {groups[3:]}:\n", _row([groups[3:], "accuracy", "AUROC", "images"]),
                  _row(["---"] * 4)]
        lines += [_row([g, _f(m["accuracy_at_threshold"]), _f(m["auroc"]), str(m["count"])])
                  for g, m in clean[groups].items()]
    if result.get("uncertain_band"):
        lines += ["", "Uncertain band (images inside it are answered `uncertain`):\n",
                  _row(["band", "decided", "accuracy of decided", "accuracy without band"]), _row(["---"] * 4)]
        lines += [_row([f"+/-{b['band']:.2f}", f"{b['coverage']:.1%}", _f(b["accuracy_decided"]),
                        _f(b["accuracy_all"])]) for b in result["uncertain_band"]]
    return "\n".join(lines) + "\n"


def write_report(result: dict, out_dir, title: str = "Evaluation", before_temperature: float | None = None) -> Path:
    """
    Write `report.md`, `results.json` and the plots (`degradations.png` when degradations were evaluated;
    `reliability.png`, before and after temperature scaling, for two-class models) into `out_dir`.
    """
    from .plots import plot_degradations, plot_reliability_comparison

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown_report(result, title))
    summary = {k: v for k, v in result.items() if k not in ("raw_logits", "labels")}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2))
    if result["degradations"]:
        plot_degradations(result["degradations"], out_dir / "degradations.png")
    if "raw_logits" in result:
        logits, labels = np.asarray(result["raw_logits"]), np.asarray(result["labels"])
        temperature = result["settings"]["temperature"]
        plot_reliability_comparison(logits, labels, temperature, out_dir / "reliability.png")
    return out_dir


def default_device_predictor(model: str | None, batch_size: int = 32):
    """A `Predictor` for evaluation (bfloat16 where fast, no worker processes)."""
    from .predict import Predictor

    return Predictor(model, batch_size=batch_size, num_workers=0,
                     device="cuda" if torch.cuda.is_available() else "cpu")
