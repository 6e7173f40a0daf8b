"""The plots saved beside a model and an evaluation: each is a PNG of its stated size, made without a display and
without matplotlib's warnings (a run without evaluations, a class never predicted)."""

import warnings

import numpy as np
import pytest
from PIL import Image

from dualsight_hf.evaluation import plots

RNG = np.random.default_rng(0)
LABELS = np.tile([0, 1], 20)
LOGITS = np.stack([-LABELS + RNG.normal(0, 1, 40), LABELS + RNG.normal(0, 1, 40)], axis=1)
HISTORY = [{"epoch": 0.5, "loss": 0.7}, {"epoch": 1.0, "loss": 0.5},
           {"epoch": 1.0, "eval_loss": 0.6, "eval_accuracy": 0.7, "eval_auroc": 0.8}]
DEGRADATIONS = [{"degradation": "jpeg", "level": 75.0, "accuracy_at_threshold": 0.8, "auroc": 0.9},
                {"degradation": "jpeg", "level": 50.0, "accuracy_at_threshold": 0.7, "auroc": 0.85},
                {"degradation": "blur", "level": 1.0, "accuracy_at_threshold": 0.75, "auroc": 0.88}]


@pytest.mark.parametrize("name, call, size", [
    ("curves", lambda path: plots.plot_training_curves(HISTORY, path), (1000, 400)),
    ("curves-without-evaluation", lambda path: plots.plot_training_curves(HISTORY[:2], path), (1000, 400)),
    ("confusion", lambda path: plots.plot_confusion_matrix(LOGITS, LABELS, ["real", "ai_generated"], path),
     (450, 400)),
    ("confusion-one-class-predicted", lambda path: plots.plot_confusion_matrix(
        np.tile([1.0, 0.0], (40, 1)), LABELS, ["real", "ai_generated"], path), (450, 400)),
    ("roc", lambda path: plots.plot_roc_curve(LOGITS, LABELS, path), (450, 400)),
    ("reliability", lambda path: plots.plot_reliability_diagram(LOGITS, LABELS, path), (450, 400)),
    ("reliability-comparison", lambda path: plots.plot_reliability_comparison(LOGITS, LABELS, 1.7, path),
     (900, 400)),
    ("degradations", lambda path: plots.plot_degradations(DEGRADATIONS, path), (1400, 400)),
])
def test_every_plot_is_a_png_of_its_size_made_without_warnings(tmp_path, name, call, size):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = call(tmp_path / "nested" / f"{name}.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        assert len(set(image.convert("L").getdata())) > 2  # something is drawn
