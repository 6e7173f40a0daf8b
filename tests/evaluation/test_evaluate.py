import dataclasses
import json

import numpy as np
import pytest
from conftest import random_image, save_tiny_model
from PIL import Image

from dualsight_hf import DualSightConfig, load_pipeline
from dualsight_hf.cli import main
from dualsight_hf.evaluation.evaluate import EvaluationData, default_device_predictor, evaluate


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory):
    """12 images in two sources, half of each class."""
    root = tmp_path_factory.mktemp("evaldata")
    rows = ["path,label,source"]
    for i in range(12):
        name = f"{i}.png"
        random_image(48, 40, seed=100 + i).save(root / name)
        rows.append(f"{name},{'fake' if i % 2 else 'real'},{'a' if i < 6 else 'b'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


@pytest.fixture
def model_dir(tmp_path):
    return save_tiny_model(tmp_path / "model", seed=3)


def test_grouped_metrics_and_degradations_by_hand(small_manifest, model_dir):
    predictor = default_device_predictor(str(model_dir), batch_size=4)
    examples = EvaluationData(str(small_manifest), split="all").load(predictor.model.config)
    result = evaluate(predictor, examples, [("jpeg", 50.0), ("crop", 0.5)], group_by="source", progress=False)
    logits, labels = np.array(result["raw_logits"]), np.array(result["labels"])
    assert labels.tolist() == [0, 1] * 6
    decisions = (logits[:, 1] > logits[:, 0]).astype(int)  # temperature 1, threshold 0.5
    for group, rows in (("a", slice(0, 6)), ("b", slice(6, 12))):
        expected = (decisions[rows] == labels[rows]).mean()
        assert result["clean"]["by_source"][group]["accuracy_at_threshold"] == pytest.approx(expected)
        assert result["clean"]["by_source"][group]["count"] == 6
    assert result["clean"]["calibrated"]["accuracy_at_threshold"] == pytest.approx((decisions == labels).mean())
    assert [(d["degradation"], d["level"]) for d in result["degradations"]] == [("jpeg", 50.0), ("crop", 0.5)]
    again = evaluate(predictor, examples, [("jpeg", 50.0)], progress=False)
    assert again["degradations"][0] == result["degradations"][0]  # deterministic


def test_evaluation_data_of_a_model_follows_its_training_record(small_manifest, model_dir, tmp_path):
    """The data sources and split settings that a model's all_results.json records are what `of_model` evaluates on
    (relative paths from `root`); given data and settings replace them; without a record the data must be given."""
    record = {"recipe": {"data": {"data": [small_manifest.name], "validation_size": 0.5, "test_size": 0.25,
                                  "split_seed": 3, "stratify_by": None}}}
    (model_dir / "all_results.json").write_text(json.dumps(record))
    data = EvaluationData.of_model(model_dir, "validation", root=small_manifest.parent)
    assert data.data == [str(small_manifest)] and data.split == "validation"
    assert (data.validation_size, data.test_size, data.split_seed, data.stratify_by) == (0.5, 0.25, 3, None)
    assert len(data.load(DualSightConfig.from_pretrained(model_dir))) == 6
    other = EvaluationData.of_model(model_dir, data="other.csv", split_seed=9, test_size=None)
    assert other.data == "other.csv" and other.split_seed == 9 and other.test_size == 0.25
    assert data.split_record is None and other.split_record is None  # no split.json: the split is recomputed
    with pytest.raises(ValueError, match="no training record"):
        EvaluationData.of_model(tmp_path, "test")


def test_evaluate_reads_several_manifests_together(small_manifest, model_dir, tmp_path, capsys):
    second = tmp_path / "second"
    second.mkdir()
    random_image(48, 40, seed=7).save(second / "x.png")
    (second / "manifest.csv").write_text("path,label,source\nx.png,real,c\n")
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(small_manifest), str(second / "manifest.csv"),
                 "--split", "all", "--perturb", "none", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["count"] == 13 and set(results["clean"]["by_source"]) == {"a", "b", "c"}
    assert f"all split of {small_manifest.parent.name} + second" in (out / "report.md").read_text()


def test_evaluate_and_calibrate_commands_write_reports(small_manifest, model_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(small_manifest), "--split", "all",
                 "--perturb", "jpeg:75", "--perturb", "blur:2", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| jpeg 75 |" in report and "| blur 2 |" in report and "per source" in report
    assert "Uncertain band" in report
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["count"] == 12 and len(results["degradations"]) == 2
    for plot in ("degradations.png", "reliability.png"):
        assert Image.open(out / plot).size[0] > 100

    calibrated = tmp_path / "calibrated"
    assert main(["calibrate", "--model", str(model_dir), "--data", str(small_manifest), "--split", "all",
                 "--target-fpr", "0.2", "--uncertain-band", "0.05", "--out", str(calibrated)]) == 0
    assert '"temperature"' in capsys.readouterr().out
    summary = json.loads((calibrated / "evaluation" / "calibration.json").read_text())
    config = DualSightConfig.from_pretrained(calibrated)
    assert config.temperature == pytest.approx(summary["temperature"]) and config.temperature != 1.0
    assert config.decision_threshold == pytest.approx(summary["decision_threshold"])
    assert config.uncertain_band == 0.05
    assert (calibrated / "evaluation" / "calibration.png").exists()
    assert json.loads((model_dir / "config.json").read_text()).get("temperature", 1.0) == 1.0  # source untouched
    classifier = load_pipeline(calibrated)
    result = classifier(str(small_manifest.parent / "0.png"), head="both")
    assert result["decision"] in {"real", "ai_generated", "uncertain"}


class _SizeKeyedPredictor:
    """A 'model' that calls an image AI-generated when it is wide: the shortcut the check must expose."""

    def __init__(self, config):
        self.model = type("Model", (), {"config": config})()

    @staticmethod
    def logits(images, bar=None):
        widths = np.array([float(image.width) for image in images])
        bar.update(len(widths))
        return np.stack([np.zeros_like(widths), (widths - 36) / 4], axis=-1)


def test_shortcut_check_exposes_a_model_that_keys_on_size(small_manifest):
    from dualsight_hf.evaluation.evaluate import shortcut_check

    examples = EvaluationData(str(small_manifest), split="all").load(DualSightConfig())
    check = shortcut_check(_SizeKeyedPredictor(DualSightConfig()), examples, progress=False)
    real_small, real_native = check["arrangements"].values()
    # real images made half as wide (24 px) and AI ones kept at 48 px: perfect; swapped: perfectly wrong
    assert real_small["auroc"] == 1.0 and real_native["auroc"] == 0.0 and check["auroc_gap"] == 1.0
    assert check["accuracy_gap"] == 1.0


def test_evaluation_feeds_the_artifact_crops(small_manifest, tmp_path):
    import torch

    from dualsight_hf.evaluation.evaluate import collect_logits
    from dualsight_hf.inference.predictor import Predictor

    folder = save_tiny_model(tmp_path / "artifact", artifact_stream={"crop_size": 16, "crops_per_side": 2})
    predictor = Predictor(str(folder), batch_size=4, dtype="float32", num_workers=0)
    examples = EvaluationData(str(small_manifest), split="all").load(predictor.model.config)
    logits = collect_logits(predictor, examples.select(range(3)), progress=False)
    classifier = load_pipeline(folder)
    for row, path in zip(logits, examples.with_format(None)["image"][:3]):
        inputs = classifier.image_processor(Image.open(path).convert("RGB"), return_tensors="pt")
        assert set(inputs) == {"pixel_values", "artifact_values"}
        with torch.no_grad():
            np.testing.assert_allclose(row, classifier.model(**inputs).logits[0].numpy(), atol=1e-4)


def test_an_interrupted_evaluation_resumes_where_it_stopped(small_manifest, model_dir, tmp_path):
    """Each finished pass is written at once; a second run with the same folder scores only the passes that are
    missing and gives the same result as one uninterrupted run."""
    predictor = default_device_predictor(str(model_dir), batch_size=4)
    examples = EvaluationData(str(small_manifest), split="all").load(predictor.model.config)
    perturbations = [("jpeg", 50.0), ("blur", 2.0)]
    whole = evaluate(predictor, examples, perturbations, progress=False, check_shortcuts=True)

    calls = []
    forward = predictor.forward

    def stop_in_the_third_pass(inputs):
        calls.append(len(inputs["pixel_values"]))
        if sum(calls) > 2 * len(examples):
            raise KeyboardInterrupt
        return forward(inputs)

    predictor.forward = stop_in_the_third_pass
    with pytest.raises(KeyboardInterrupt):
        evaluate(predictor, examples, perturbations, progress=False, check_shortcuts=True, passes_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == ["clean.npy", "jpeg_50.npy"]

    calls.clear()
    predictor.forward = lambda inputs: (calls.append(len(inputs["pixel_values"])), forward(inputs))[1]
    resumed = evaluate(predictor, examples, perturbations, progress=False, check_shortcuts=True, passes_dir=tmp_path)
    assert sum(calls) == 3 * len(examples)  # blur 2 and the two shortcut arrangements
    assert resumed["degradations"] == whole["degradations"] and resumed["clean"] == whole["clean"]
    assert resumed["shortcut_check"] == whole["shortcut_check"]


def test_evaluate_quick_and_resume_commands(small_manifest, model_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(small_manifest), "--split", "all", "--quick",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [(d["degradation"], d["level"]) for d in results["degradations"]] == \
        [("jpeg", 75.0), ("downscale", 0.5), ("blur", 1.0)]
    assert "shortcut_check" not in results and len(list((out / "passes").glob("*.npy"))) == 4
    assert main(["evaluate", "--model", str(model_dir), "--data", str(small_manifest), "--split", "all", "--quick",
                 "--resume", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["degradations"] == results["degradations"]
    other = save_tiny_model(tmp_path / "other", seed=9)
    with pytest.raises(SystemExit, match="holds passes of another model, data or split"):
        main(["evaluate", "--model", str(other), "--data", str(small_manifest), "--split", "all", "--quick",
              "--resume", "--out", str(out)])


def test_evaluation_data_merges_the_recorded_object_labels(small_manifest, model_dir):
    """A recorded `objects_file` is merged, so the rows carry the object head's targets; rows it does not list stay
    unknown (-100), and the split is the same as without it."""
    (small_manifest.parent / "objects.csv").write_text('path,objects\n0.png,"[""dog""]"\n2.png,"[]"\n')
    record = {"recipe": {"data": {"data": [small_manifest.name], "objects_file": ["objects.csv"],
                                  "stratify_by": None}}}
    (model_dir / "all_results.json").write_text(json.dumps(record))
    data = EvaluationData.of_model(model_dir, "all", root=small_manifest.parent)
    assert data.objects_file == [str(small_manifest.parent / "objects.csv")]
    config = DualSightConfig.from_pretrained(model_dir)  # objects: person, car, dog
    rows = data.load(config).with_format(None)
    by_path = dict(zip(rows["path"], rows["object_labels"]))
    assert by_path["0.png"] == [0.0, 0.0, 1.0] and by_path["2.png"] == [0.0, 0.0, 0.0]
    assert by_path["1.png"] == [-100.0] * 3
    without = dataclasses.replace(data, split="test", objects_file=None).load(config).with_format(None)
    assert dataclasses.replace(data, split="test").load(config).with_format(None)["path"] == without["path"]
