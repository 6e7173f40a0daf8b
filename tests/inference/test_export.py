"""`dualsight export --format onnx`: the graph gives the PyTorch model's logits for the processor's inputs, and the
command prints one line."""

import numpy as np
import pytest
import torch
from conftest import random_image, save_tiny_model

from dualsight_hf.cli import main


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
