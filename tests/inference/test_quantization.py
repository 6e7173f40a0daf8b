"""Static int8 quantization: calibrated from images, one compiled batch size, measured against float32."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, load_benchmark, random_image, save_tiny_model, shared_path

from dualsight_hf.inference.predictor import Predictor
from dualsight_hf.inference.quantization import Int8Model, QuantizationError

pytest.importorskip("torchao", reason="int8 quantization needs the int8 extra (torchao)")


@pytest.fixture(scope="module")
def calibration_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    for i in range(6):
        random_image(40, 36, seed=100 + i).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")  # skipped, not fatal
    return folder


@pytest.fixture(scope="module")
def int8_predictor(tiny_model_dir, calibration_images):
    return Predictor(str(tiny_model_dir), batch_size=4, dtype="int8", calibration=[calibration_images],
                     num_workers=0)


def test_rows_do_not_depend_on_the_batch_they_are_in(int8_predictor):
    """Batches smaller than the compiled size are padded and larger ones split: a row's logits do not depend on the
    other rows of its batch (real images or zero padding). Rows are compared at the same position in the compiled
    batch (the first): oneDNN's int8 kernels block rows by position, which moves a logit by one quantization step."""
    inputs = {"pixel_values": torch.randn(9, 3, 32, 32)}
    together = int8_predictor.compiled(**inputs)
    assert together.logits.shape == (9, 2) and together.object_logits.shape[0] == 9
    for row in (4, 8):  # first row of the second (full) and of the third (padded) compiled batch
        alone = int8_predictor.compiled(pixel_values=inputs["pixel_values"][row:row + 1])
        torch.testing.assert_close(alone.logits[0], together.logits[row], atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.object_logits[0], together.object_logits[row], atol=1e-5, rtol=0)


def test_int8_predictions_follow_float32(int8_predictor, tiny_model_dir, tmp_path):
    """End to end through `predict_paths`: the same inputs, order and errors as float32, scores close to them."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(7):
        random_image(50, 40, seed=i).save(folder / f"{i}.png")
    (folder / "3-broken.jpg").write_bytes(b"GIF89a")
    reference = Predictor(str(tiny_model_dir), batch_size=4, dtype="float32", num_workers=0).predict_paths([folder])
    ours = int8_predictor.predict_paths([folder])
    assert [(r.path, r.error is None) for r in ours] == [(r.path, r.error is None) for r in reference]
    scores = [(a.score, b.score) for a, b in zip(ours, reference) if b.score is not None]
    assert len(scores) == 7 and max(abs(a - b) for a, b in scores) < 0.05


def test_int8_needs_calibration_images(tiny_model_dir, tmp_path):
    with pytest.raises(QuantizationError, match="needs calibration images"):
        Predictor(str(tiny_model_dir), dtype="int8")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuantizationError, match="no readable calibration images"):
        Predictor(str(tiny_model_dir), dtype="int8", calibration=[tmp_path / "empty"])
    with pytest.raises(QuantizationError, match="runs on the CPU"):
        Predictor(str(tiny_model_dir), dtype="int8", device="cuda", calibration=[tmp_path])
    with pytest.raises(QuantizationError, match="at least one batch"):
        Int8Model.calibrate(Predictor(str(tiny_model_dir)).model, [])


def test_cli_int8_without_calibration_is_one_line(tiny_model_dir, calibration_images):
    result = subprocess.run([sys.executable, "-m", "dualsight_hf.cli", "predict", str(calibration_images),
                             "--model", str(tiny_model_dir), "--dtype", "int8"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("dualsight: error: --dtype int8") and "--calibration" in result.stderr


def test_missing_torchao_is_named(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e.quantize_pt2e", None)
    batch = {"pixel_values": torch.zeros(1, 3, 32, 32)}
    with pytest.raises(QuantizationError, match=r"pip install 'dualsight-hf\[int8\]'"):
        Int8Model.calibrate(Predictor(str(tiny_model_dir)).model, [batch])


def test_artifact_stream_models_quantize(tmp_path, calibration_images):
    """A model with the artifact stream takes both inputs through the quantized graph."""
    model_dir = save_tiny_model(tmp_path / "artifact", artifact_stream={"crop_size": 16, "crops_per_side": 2})
    ours = Predictor(str(model_dir), batch_size=4, dtype="int8", calibration=[calibration_images])
    assert ours.compiled.input_names == ("pixel_values", "artifact_values")
    results = ours.predict_paths([calibration_images])
    scored = [r for r in results if r.error is None]
    assert len(scored) == 6 and all(r.label for r in scored)
    assert [r.path.endswith("broken.jpg") for r in results if r.error] == [True]


def test_the_readme_reports_what_int8_does_to_the_mobile_model():
    """Re-measure int8 against float32 on the shared validation images as `benchmarks/int8_agreement.py` does
    (64 training images calibrate it) and check it against this machine's record, where there is one (the int8
    kernels differ between CPUs, and so do the decisions they move); the README's table is one of the records."""
    from dualsight_hf.machine import describe_machine

    benchmark = load_benchmark("int8_agreement")
    shared_path("data")
    measured = benchmark.measure(splits_to_compare=("validation",), onnxruntime=False)["splits"]["validation"]
    # int8 follows float32 (a broken calibration falls towards the 50% of chance)
    assert measured["agreement"] > 0.8 and measured["auroc_int8"] > 0.8, measured
    records = {path: json.loads(path.read_text()) for path in benchmark.RESULTS.glob("int8_agreement-*.json")}
    assert records, "no recorded int8 measurement: run make int8-agreement"
    here = benchmark.results_path(describe_machine())
    if here in records:
        recorded = records[here]["splits"]["validation"]
        assert measured["agreement"] == pytest.approx(recorded["agreement"], abs=0.01)
        assert measured["auroc_int8"] == pytest.approx(recorded["auroc_int8"], abs=0.003)
    readme = (REPO / "README.md").read_text()
    assert any(benchmark.markdown(record) in readme for record in records.values())


def test_check_precision_command_reports_int8_agreement(tiny_model_dir, calibration_images, tmp_path, capsys):
    """`dualsight check-precision --dtype int8` on a labelled manifest: the share of decisions that int8 leaves as
    float32 made them, recomputed here from the two predictors' own scores."""
    from dualsight_hf.cli import main

    rows = ["path,label,source"]
    for i in range(10):
        random_image(44, 40, seed=200 + i).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'fake' if i % 2 else 'real'},a")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    assert main(["check-precision", "--model", str(tiny_model_dir), "--data", str(tmp_path / "manifest.csv"),
                 "--split", "all", "--dtype", "int8", "--calibration", str(calibration_images),
                 "--batch-size", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 10 and report["criteria"]["min_decision_agreement"] == 0.995

    files = [tmp_path / f"{i}.png" for i in range(10)]
    decisions = {}
    for dtype in ("float32", "int8"):
        predictor = Predictor(str(tiny_model_dir), batch_size=4, dtype=dtype, calibration=[calibration_images])
        second = predictor.model.config.id2label[1]
        decisions[dtype] = [next(a["score"] for a in r.authenticity if a["label"] == second) >= 0.5
                            for r in predictor.predict_paths(files)]
    same = sum(a == b for a, b in zip(decisions["float32"], decisions["int8"])) / 10
    assert report["agreement"] == pytest.approx(same)
    assert report["unchanged_answers"] == (same >= 0.995 and report["auroc_difference"] <= 0.002)
