"""The precision `--dtype auto` uses: measured speed first, then the answers, stored in the model and said in one
sentence of its card."""

import json

import pytest
from conftest import random_image, save_tiny_model

from dualsight_hf import DualSightConfig
from dualsight_hf.evaluation.evaluate import EvaluationData
from dualsight_hf.hub import precision_markdown
from dualsight_hf.inference import precision as precision_module
from dualsight_hf.inference.precision import choose_inference_dtype, reduced_precision_is_safe, scoring_speed


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision-data")
    rows = ["path,label"]
    for i in range(8):
        random_image(40, 40, seed=200 + i).save(root / f"{i}.png")
        rows.append(f"{i}.png,{'fake' if i % 2 else 'real'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def examples_for(model_dir, manifest):
    return EvaluationData(str(manifest), split="all").load(DualSightConfig.from_pretrained(model_dir))


def test_scoring_speed_is_measured(tmp_path, labelled):
    model_dir = save_tiny_model(tmp_path / "model")
    images = examples_for(model_dir, labelled).with_format(None)["image"][:4]
    assert scoring_speed(model_dir, images, "float32", repeats=1) > 0


def test_bfloat16_that_is_not_faster_here_is_not_used_and_its_answers_are_not_measured(tmp_path, labelled,
                                                                                        monkeypatch):
    model_dir = save_tiny_model(tmp_path / "model")
    monkeypatch.setattr(precision_module, "scoring_speed",
                        lambda model, images, dtype: {"float32": 3.0, "bfloat16": 0.8}[dtype])
    monkeypatch.setattr(precision_module, "compare_precisions", lambda *args, **kwargs: pytest.fail("measured"))
    record = choose_inference_dtype(model_dir, examples_for(model_dir, labelled))
    assert record["inference_dtype"] == "float32" and "agreement" not in record
    assert DualSightConfig.from_pretrained(model_dir).inference_dtype == "float32"
    (model_dir / "evaluation").mkdir()
    (model_dir / "evaluation" / "precision.json").write_text(json.dumps(record))
    sentence = precision_markdown(model_dir)
    assert "bfloat16 scored 0.8 images/s against float32's 3.0" in sentence and "not measured" in sentence
    assert sentence.strip().endswith("uses float32 for this model.")


def test_faster_bfloat16_is_used_exactly_when_it_keeps_the_answers(tmp_path, labelled, monkeypatch):
    model_dir = save_tiny_model(tmp_path / "model", seed=5)
    monkeypatch.setattr(precision_module, "scoring_speed",
                        lambda model, images, dtype: {"float32": 1.0, "bfloat16": 2.0}[dtype])
    record = choose_inference_dtype(model_dir, examples_for(model_dir, labelled))
    assert record["count"] == 8 and 0 <= record["agreement"] <= 1
    stored = DualSightConfig.from_pretrained(model_dir).inference_dtype
    assert (stored is None) == reduced_precision_is_safe(record)
    assert record["inference_dtype"] == (stored or "bfloat16 where fast")
