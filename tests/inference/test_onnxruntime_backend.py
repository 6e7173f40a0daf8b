"""ONNX Runtime as the `Predictor`'s engine: the same answers and errors as torch, one export per weights and input
size reused by later runs, and one-line refusals of what it cannot do."""

import pytest
import torch

from dualsight_hf.cli import main
from dualsight_hf.inference.onnxruntime_backend import BackendError, OnnxRuntimeModel, model_fingerprint
from dualsight_hf.inference.predictor import Predictor, iter_inputs
from dualsight_hf.models.loading import load_model

pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the export extra")


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    """Exports go to this test's own $DUALSIGHT_HOME."""
    monkeypatch.setenv("DUALSIGHT_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "onnx"


def test_the_same_answers_and_errors_as_torch(artifact_model_dir, many_images):
    """An artifact-stream model (two inputs, two heads): labels and errors equal, probabilities within 1e-4."""
    torch_results = Predictor(str(artifact_model_dir), num_workers=0, dtype="float32").predict_paths([many_images])
    ort = Predictor(str(artifact_model_dir), num_workers=0, backend="onnxruntime")
    assert ort.dtype is torch.float32 and isinstance(ort.compiled, OnnxRuntimeModel)
    ort_results = ort.predict_paths([many_images])
    assert [(r.path, r.label, r.error) for r in ort_results] == [(r.path, r.label, r.error) for r in torch_results]
    assert sum(r.error is not None for r in ort_results) == 1
    for ours, reference in zip(ort_results, torch_results):
        if reference.error is None:
            assert ours.score == pytest.approx(reference.score, abs=1e-4)
            assert [o["label"] for o in ours.objects] == [o["label"] for o in reference.objects]


def test_one_export_per_weights_and_size_is_reused(tiny_model_dir, onnx_cache, monkeypatch):
    model = load_model(str(tiny_model_dir)).eval()
    OnnxRuntimeModel.from_model(model, (32, 32))
    exported = sorted(onnx_cache.iterdir())
    assert len(exported) == 1 and exported[0].suffix == ".onnx" and ".partial" not in exported[0].name

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("dualsight_hf.inference.export.export_onnx", no_export)
    again = OnnxRuntimeModel.from_model(model, (32, 32))  # the file is reused
    pixels = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(pixel_values=pixels).logits, model(pixels).logits, atol=1e-4, rtol=1e-4)
    fingerprint = model_fingerprint(model, (32, 32))
    assert model_fingerprint(model, (48, 48)) != fingerprint
    with torch.no_grad():
        model.classifier.weight.add_(1e-3)
    assert model_fingerprint(model, (32, 32)) != fingerprint  # other weights: another export


@pytest.mark.parametrize("options, said", [
    (["--dtype", "bfloat16"], "not with --dtype bfloat16"),
    (["--compile"], "not with --compile"),
    (["--device", "meta"], "not with --device meta"),
])
def test_what_it_cannot_do_is_one_line(tiny_model_dir, image_dir, capsys, options, said):
    code = main(["predict", str(image_dir), "--model", str(tiny_model_dir), "--backend", "onnxruntime", *options])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [f"dualsight: error: --backend onnxruntime runs float32 on the CPU: "
                                              f"{said}"]


def test_without_onnxruntime_it_says_which_extra_to_install(tiny_model_dir, image_dir, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    with pytest.raises(BackendError, match=r"pip install 'dualsight-hf\[export\]'"):
        OnnxRuntimeModel.from_model(load_model(str(tiny_model_dir)).eval(), (32, 32))
    assert main(["predict", str(image_dir), "--model", str(tiny_model_dir), "--backend", "onnxruntime"]) == 2
    assert "needs the export extra" in capsys.readouterr().err


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of torch, onnxruntime"):
        Predictor(backend="tensorrt")


def test_a_stream_through_onnxruntime_keeps_every_input_once(tiny_model_dir, many_images):
    predictor = Predictor(str(tiny_model_dir), batch_size=3, num_workers=0, backend="onnxruntime")
    results = list(predictor.stream(lambda: iter_inputs([many_images]), progress=False))
    assert sorted(r.index for r in results) == list(range(11))  # batches of 3: the graph's batch axis is dynamic
    assert sum(r.error is not None for r in results) == 1
