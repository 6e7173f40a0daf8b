"""The evaluation report: its Markdown tables say what `evaluate.evaluate` measured, and the folder it writes holds
the report, the results without the per-image logits, and the plots."""

import json
import math

import numpy as np

from dualsight_hf.evaluation.report import markdown_report, write_report

NAN = float("nan")


def result(with_logits: bool = True) -> dict:
    metrics = {"accuracy": 0.9, "auroc": 0.95, "ece": 0.04, "accuracy_at_threshold": 0.91, "count": 4}
    found = {
        "clean": {"raw": {**metrics, "accuracy": 0.875}, "calibrated": metrics,
                  "by_source": {"coco": metrics, "tiny": {**metrics, "auroc": NAN, "count": 1}}},
        "degradations": [{"degradation": "jpeg", "level": 75.0, "accuracy_at_threshold": 0.8, "auroc": 0.9,
                          "ece": 0.05}],
        "settings": {"temperature": 1.5, "decision_threshold": 0.42, "uncertain_band": 0.1, "count": 4},
        "uncertain_band": [{"band": 0.1, "coverage": 0.75, "accuracy_decided": 1.0, "accuracy_all": 0.9}],
        "shortcut_check": {"arrangements": {"real small": {"accuracy_at_threshold": 0.6, "auroc": 0.7},
                                            "real native": {"accuracy_at_threshold": 0.9, "auroc": 0.95}},
                           "accuracy_gap": 0.3, "auroc_gap": 0.25},
    }
    if with_logits:
        found |= {"raw_logits": np.tile([[1.0, -1.0], [-1.0, 1.0]], (2, 1)).tolist(), "labels": [0, 1, 0, 1]}
    return found


def test_the_report_has_a_row_for_each_measurement():
    text = markdown_report(result(), title="Test split")
    assert text.startswith("### Test split\n")
    assert "4 images; temperature 1.500, decision threshold 0.420 on P(ai_generated), uncertain band +/-0.10." in text
    for row in ("| clean, raw (argmax) | 0.875 | 0.950 | 0.040 |", "| clean, calibrated | 0.910 | 0.950 | 0.040 |",
                "| jpeg 75 | 0.800 | 0.900 | 0.050 |", "| tiny | 0.910 | n/a | 1 |", "| difference | 0.300 | 0.250 |",
                "| +/-0.10 | 75.0% | 1.000 | 0.900 |"):
        assert row in text, row


def test_the_folder_holds_the_report_the_results_without_logits_and_the_plots(tmp_path):
    folder = write_report(result(), tmp_path / "report", title="Test split")
    assert sorted(path.name for path in folder.iterdir()) == ["degradations.png", "reliability.png", "report.md",
                                                              "results.json"]
    saved = json.loads((folder / "results.json").read_text())
    assert "raw_logits" not in saved and "labels" not in saved
    assert math.isnan(saved["clean"]["by_source"]["tiny"]["auroc"])
    assert (folder / "report.md").read_text() == markdown_report(result(), "Test split")


def test_without_degradations_or_logits_no_plot_is_made(tmp_path):
    bare = {**result(with_logits=False), "degradations": []}
    folder = write_report(bare, tmp_path / "report")
    assert sorted(path.name for path in folder.iterdir()) == ["report.md", "results.json"]
