"""Batch prediction: streaming with bounded read-ahead, output formats, resume, several processes, dtypes, ONNX."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, random_image, save_tiny_model, shared_path

from dualsight_hf.cli import main
from dualsight_hf.inference.predictor import Predictor, PreprocessedInputs, iter_inputs
from dualsight_hf.inference.results import read_results


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    return Predictor(str(tiny_model_dir), batch_size=4, num_workers=0)


@pytest.fixture
def many_images(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(10):
        random_image(40, 30, seed=i).save(folder / f"{i:02d}.png")
    (folder / "05-broken.jpg").write_bytes(b"<html>")
    return folder


def test_stream_reads_ahead_by_at_most_a_batch(predictor):
    consumed = []

    def endless():
        index = 0
        while True:
            consumed.append(index)
            yield f"generated-{index}", random_image(20, 20, seed=index)
            index += 1

    results = []
    for result in predictor.stream(endless, progress=False):
        results.append(result)
        assert len(consumed) <= len(results) + predictor.batch_size
        if len(results) == 10:
            break
    assert [r.path for r in results] == [f"generated-{i}" for i in range(10)]
    assert all(r.label in {"real", "ai_generated"} for r in results)


def test_reading_threads_keep_every_input_once_and_in_order(predictor, many_images):
    def read(**threading):
        return list(PreprocessedInputs(lambda: iter_inputs([many_images]), predictor.prepare, **threading))

    serial, threaded = read(), read(threads=2, chunk=4)
    assert [(i, key, error) for i, key, _, error, _ in threaded] == \
        [(i, key, error) for i, key, _, error, _ in serial]
    assert sum(error is not None for _, _, _, error, _ in threaded) == 1
    for (_, _, ours, _, _), (_, _, reference, _, _) in zip(threaded, serial):
        assert (ours is None) == (reference is None)
        if reference is not None:
            assert all(torch.equal(ours[name], reference[name]) for name in reference)


def test_stream_with_worker_processes_keeps_every_input_once(tiny_model_dir, many_images):
    workers = Predictor(str(tiny_model_dir), batch_size=3, num_workers=2)
    results = list(workers.stream(lambda: iter_inputs([many_images]), progress=False))
    assert sorted(r.index for r in results) == list(range(11))
    assert sum(bool(r.error) for r in results) == 1


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv"])
def test_every_output_format(capsys, tiny_model_dir, many_images, fmt):
    code = main(["predict", str(many_images), "--model", str(tiny_model_dir), "--format", fmt])
    out = capsys.readouterr().out
    assert code == 1  # the broken file
    if fmt == "json":
        rows = json.loads(out)
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in out.splitlines()]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
    else:
        lines = out.splitlines()
        assert lines[0].split()[:3] == ["path", "label", "score"] and len(lines) == 12
        assert "05-broken.jpg  ERROR" in out and "not an image: the file holds HTML" in out
        return
    assert len(rows) == 11 and [int(r["index"]) for r in rows] == list(range(11))
    broken = [r for r in rows if r["path"].endswith("05-broken.jpg")][0]
    assert "HTML" in broken["error"] and not broken["label"]


def test_resume_scores_only_new_inputs(capsys, tiny_model_dir, many_images, tmp_path):
    output = tmp_path / "results.jsonl"
    assert main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output)]) == 1
    first = read_results(output)
    random_image(40, 30, seed=99).save(many_images / "99.png")
    capsys.readouterr()
    assert main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output),
                 "--resume"]) == 0
    assert "1 scored, 0 failed, 11 kept from the earlier run" in capsys.readouterr().err
    again = read_results(output)
    assert len(again) == 12 and len({r.path for r in again}) == 12
    assert [r.path for r in again[:11]] == [r.path for r in first]


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_resume_with_other_formats(tiny_model_dir, many_images, tmp_path, suffix):
    output = tmp_path / f"results{suffix}"
    main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output)])
    random_image(40, 30, seed=98).save(many_images / "98.png")
    main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output), "--resume"])
    results = read_results(output, suffix.lstrip("."))
    assert len(results) == 12 and len({r.path for r in results}) == 12


def test_paths_from_file_and_dataset_inputs(capsys, tiny_model_dir, many_images, tmp_path):
    listing = tmp_path / "paths.txt"
    listing.write_text(f"# two files\n{many_images / '00.png'}\n\n{many_images / '01.png'}\n")
    assert main(["predict", "--paths-from", str(listing), "--model", str(tiny_model_dir), "--format",
                 "jsonl"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    import datasets

    table = datasets.Dataset.from_dict({"image": [random_image(seed=i) for i in range(3)], "label": [0, 1, 0]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.Value("int64")}))
    table.save_to_disk(tmp_path / "ds")
    assert main(["predict", "--dataset", str(tmp_path / "ds"), "--model", str(tiny_model_dir), "--format",
                 "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == [f"{tmp_path / 'ds'}:{i}" for i in range(3)]


def test_two_processes_merge_one_output_without_duplicates_or_gaps(tiny_model_dir, many_images, tmp_path):
    output = tmp_path / "merged.jsonl"
    result = subprocess.run([sys.executable, "-m", "dualsight_hf.cli", "predict", str(many_images), "--model",
                             str(tiny_model_dir), "--output", str(output), "--num-processes", "2",
                             "--batch-size", "2"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 1, result.stderr[-2000:]  # one broken file
    merged = read_results(output)
    assert [r.index for r in merged] == list(range(11))
    assert len({r.path for r in merged}) == 11
    assert not list(tmp_path.glob("merged.jsonl.rank*"))
    single = Predictor(str(tiny_model_dir), num_workers=0).predict_paths([many_images])
    for a, b in zip(merged, single):
        assert a.path == b.path and a.label == b.label
        if a.score is not None:
            assert a.score == pytest.approx(b.score, abs=1e-3)


def shared_split(name: str):
    """One split of ../shared as the default model's training run made it."""
    from dualsight_hf import MOBILE_MODEL_DIR, DualSightConfig
    from dualsight_hf.evaluation.evaluate import EvaluationData

    shared_path("data")
    return EvaluationData.of_model(MOBILE_MODEL_DIR, name, root=REPO).load(
        DualSightConfig.from_pretrained(MOBILE_MODEL_DIR))


def test_auto_precision_follows_the_models_recorded_choice(monkeypatch):
    """`--dtype auto` takes the precision the model recorded (`inference_dtype`, measured by
    `precision.choose_inference_dtype`), falls back to the machine's rule where it recorded none, and an explicit
    `--dtype` wins over both."""
    import torch

    from dualsight_hf import MOBILE_MODEL_DIR
    from dualsight_hf.inference.predictor import resolve_dtype

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
    import json

    from dualsight_hf import MOBILE_MODEL_DIR, DualSightConfig
    from dualsight_hf.inference.precision import compare_precisions, reduced_precision_is_safe

    comparison = compare_precisions(MOBILE_MODEL_DIR, shared_split("validation"))
    stored = DualSightConfig.from_pretrained(MOBILE_MODEL_DIR).inference_dtype
    recorded = json.loads((MOBILE_MODEL_DIR / "evaluation" / "precision.json").read_text())
    assert stored == recorded["inference_dtype"] == "float32"
    assert not reduced_precision_is_safe(comparison), comparison
    assert comparison["agreement"] == pytest.approx(recorded["agreement"], abs=0.005)


@pytest.fixture(scope="module")
def artifact_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("artifact-model"), artifact_stream={"crop_size": 16,
                                                                                      "crops_per_side": 2})


def test_compiled_model_gives_the_same_answers(tiny_model_dir, many_images):
    eager = Predictor(str(tiny_model_dir), dtype="float32").predict_paths([many_images])
    compiled = Predictor(str(tiny_model_dir), dtype="float32", compile=True).predict_paths([many_images])
    assert [r.path for r in compiled] == [r.path for r in eager]
    for ours, reference in zip(compiled, eager):
        assert ours.label == reference.label and ours.error == reference.error
        if reference.score is not None:
            assert abs(ours.score - reference.score) < 1e-4


def test_predict_carries_the_artifact_input(artifact_model_dir, many_images):
    from dualsight_hf import load_pipeline

    results = Predictor(str(artifact_model_dir), batch_size=4, num_workers=0).predict_paths([many_images])
    assert len(results) == 11 and sum(bool(r.error) for r in results) == 1
    classifier = load_pipeline(artifact_model_dir)
    for result in results:
        if not result.error:  # the same probabilities as the pipeline, one image at a time
            expected = classifier(result.path, top_k=2)
            assert result.authenticity[0]["label"] == expected[0]["label"]
            assert abs(result.authenticity[0]["score"] - expected[0]["score"]) < 1e-4


@pytest.mark.parametrize("which", ["mobile", "artifact", "artifact-max"])
def test_onnx_export_matches_pytorch(tmp_path, which, artifact_model_dir, capfd):
    ort = pytest.importorskip("onnxruntime", reason="ONNX parity needs onnxruntime: pip install dualsight-hf[export]")
    from dualsight_hf import MOBILE_MODEL_DIR, load_image_processor, load_model

    model_dir = str(MOBILE_MODEL_DIR if which == "mobile" else artifact_model_dir)
    if which == "artifact-max":
        model_dir = str(save_tiny_model(tmp_path / "max", artifact_stream={"crop_size": 16, "crops_per_side": 2,
                                                                          "crop_aggregation": "max"}))
    capfd.readouterr()
    assert main(["export", "--model", model_dir, "--format", "onnx", "--out", str(tmp_path / "model.onnx")]) == 0
    printed = capfd.readouterr()  # the exporter's own TracerWarnings and logs stay behind --verbose
    assert len(printed.err.strip().splitlines()) == 1 and "model.onnx" in printed.err and not printed.out, printed
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    processor = load_image_processor(model_dir)
    images = [random_image(300, 200, seed=i) for i in range(3)]
    inputs = processor(images, return_tensors="pt")
    assert [i.name for i in session.get_inputs()] == list(inputs)
    logits, object_logits = session.run(None, {name: values.numpy() for name, values in inputs.items()})
    model = load_model(model_dir).eval()
    with torch.no_grad():
        expected = model(**inputs)
    np.testing.assert_allclose(logits, expected.logits.numpy(), atol=1e-3)
    np.testing.assert_allclose(object_logits, expected.object_logits.numpy(), atol=1e-3)


def test_an_interrupted_resume_keeps_the_earlier_json(tiny_model_dir, many_images, tmp_path, monkeypatch):
    output = tmp_path / "results.json"
    main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output)])
    before = output.read_text()
    random_image(40, 30, seed=97).save(many_images / "97.png")

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Predictor, "stream", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output), "--resume"])
    assert output.read_text() == before


def test_resume_needs_a_readable_output_format(tiny_model_dir, many_images):
    with pytest.raises(SystemExit, match="--resume needs --output in jsonl, csv or json"):
        main(["predict", str(many_images), "--model", str(tiny_model_dir), "--resume"])


def test_logits_are_those_of_score_in_order_and_name_an_unreadable_file(predictor, many_images, tmp_path):
    """`Predictor.logits` goes through the same loop as `predict`: a generator of images and files gives the
    logits `score` decides on, in input order, the bar counts every image, and an unreadable file is named."""
    from dualsight_hf import ImageLoadError, load_image
    from dualsight_hf.models.pipeline import authenticity_probabilities

    class Bar:
        n = 0

        def update(self, count):
            self.n += count

    files = sorted(many_images.iterdir())[:5]
    sources = [load_image(files[0]), *map(str, files[1:])]
    bar = Bar()
    logits = predictor.logits((source for source in sources), bar=bar)
    assert bar.n == 5 and logits.shape == (5, 2)
    scored = predictor.score([predictor.prepare(source) for source in sources])
    for row, answer in zip(logits, scored):
        probabilities = authenticity_probabilities(row, predictor.model.config)
        assert {entry["label"]: entry["score"] for entry in answer["authenticity"]} == pytest.approx(
            {predictor.model.config.id2label[i]: p for i, p in enumerate(probabilities)}, abs=1e-6)
    (tmp_path / "broken.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="broken.png"):
        predictor.logits([str(files[0]), str(tmp_path / "broken.png")])
