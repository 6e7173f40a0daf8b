"""The precision `--dtype auto` uses: measured speed first, then the answers, stored in the model and said in one
sentence of its card."""

import json

import pytest
import torch
from conftest import REPO, random_image, save_tiny_model, shared_path

from dualsight_hf import MOBILE_MODEL_DIR, DualSightConfig
from dualsight_hf.evaluation.evaluate import EvaluationData
from dualsight_hf.hub import precision_markdown
from dualsight_hf.inference import precision as precision_module
from dualsight_hf.inference.precision import (
    choose_inference_dtype,
    compare_precisions,
    reduced_precision_is_safe,
    scoring_speed,
)
from dualsight_hf.inference.predictor import Predictor, resolve_dtype


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


def shared_split(name: str):
    """One split of ../shared as the mobile model's training run made it."""
    shared_path("data")
    return EvaluationData.of_model(MOBILE_MODEL_DIR, name, root=REPO).load(
        DualSightConfig.from_pretrained(MOBILE_MODEL_DIR))


def test_auto_precision_follows_the_models_recorded_choice(monkeypatch):
    """`--dtype auto` takes the precision the model recorded (`inference_dtype`, measured by
    `precision.choose_inference_dtype`), falls back to the machine's rule where it recorded none, and an explicit
    `--dtype` wins over both."""
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu, "bfloat16") is torch.bfloat16
    assert resolve_dtype("auto", cpu, "float32") is torch.float32
    assert resolve_dtype("float32", cpu, "bfloat16") is torch.float32
    for avx512_bf16, amx, expected in ((False, False, torch.float32), (True, False, torch.bfloat16),
                                       (False, True, torch.bfloat16)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        assert resolve_dtype("auto", cpu, None) is expected, (avx512_bf16, amx)
        assert resolve_dtype("auto", cpu, "float32") is torch.float32  # a recorded choice wins on any CPU
    monkeypatch.undo()
    assert Predictor(str(MOBILE_MODEL_DIR)).dtype is torch.float32  # its record: bfloat16 changed its answers


def test_the_stored_precision_choice_matches_a_measurement():
    """The mobile model's `inference_dtype` is float32 because bfloat16 changes its answers on the validation split
    (depthwise MobileNetV2 layers lose too much in bfloat16), as its precision record says."""

    comparison = compare_precisions(MOBILE_MODEL_DIR, shared_split("validation"))
    stored = DualSightConfig.from_pretrained(MOBILE_MODEL_DIR).inference_dtype
    recorded = json.loads((MOBILE_MODEL_DIR / "evaluation" / "precision.json").read_text())
    assert stored == recorded["inference_dtype"] == "float32"
    assert not reduced_precision_is_safe(comparison), comparison
    assert comparison["agreement"] == pytest.approx(recorded["agreement"], abs=0.005)


def test_another_backend_is_compared_with_torch_float32(tmp_path, labelled, monkeypatch):
    """`compare_precisions` with `backend="onnxruntime"`: the float32 graph keeps every decision and the AUROC; a
    float32 torch run compared with itself is refused."""
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the export extra")
    monkeypatch.setenv("DUALSIGHT_HOME", str(tmp_path / "home"))
    model_dir = save_tiny_model(tmp_path / "model")
    comparison = compare_precisions(model_dir, examples_for(model_dir, labelled), reduced="float32",
                                    backend="onnxruntime")
    assert comparison["agreement"] == 1.0 and comparison["count"] == 8
    assert comparison["auroc_onnxruntime"] == pytest.approx(comparison["auroc_float32"])
    assert comparison["max_probability_difference"] < 1e-4 and reduced_precision_is_safe(comparison)
    with pytest.raises(ValueError, match="not with itself"):
        compare_precisions(model_dir, examples_for(model_dir, labelled), reduced="float32")
