"""ONNX Runtime as the engine of the `Predictor` on the CPU (`dualsight predict --backend onnxruntime`).

The model is exported once per weights and input size ([`export.export_onnx`], float32, dynamic batch) into
`$DUALSIGHT_HOME/onnx/` and the file is reused by every later run; the session is called like the model, so the
preprocessing, the decisions and the errors are the `Predictor`'s own, whichever engine computes the logits.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..models.modeling import DualSightImageClassifierOutput

#: the engines a `Predictor` runs a model with
BACKENDS = ("torch", "onnxruntime")


#: what a machine without onnxruntime or onnx is told
MISSING_EXTRA = "--backend onnxruntime needs the export extra: pip install 'dualsight-hf[export]'"


class BackendError(RuntimeError):
    """A backend that cannot run here or with these settings (a one-line message for the command line)."""


def model_fingerprint(model, image_size: tuple[int, int]) -> str:
    """A sha256 (16 hex digits) of what an export depends on: the weights, the configuration, the input size and the
    torch version that exports."""
    digest = hashlib.sha256(json.dumps({"config": model.config.to_dict(), "size": list(image_size),
                                        "torch": torch.__version__}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class OnnxRuntimeModel:
    """
    A DualSight model's ONNX graph in an ONNX Runtime session, called like the model with keyword inputs
    (`pixel_values`, and `artifact_values` with an artifact stream); returns [`DualSightImageClassifierOutput`]
    with float32 `logits` and `object_logits` on the CPU.

    Build one with [`OnnxRuntimeModel.from_model`].

    Args:
        session (`onnxruntime.InferenceSession`): the session of the exported graph.

    Example:

    ```python
    >>> import torch
    >>> from transformers import MobileNetV2Config
    >>> from dualsight_hf import DualSightConfig, DualSightForImageClassification
    >>> from dualsight_hf.inference.onnxruntime_backend import OnnxRuntimeModel
    >>> config = DualSightConfig(backbone_config=MobileNetV2Config(image_size=64), num_object_labels=3)
    >>> model = DualSightForImageClassification(config).eval()
    >>> engine = OnnxRuntimeModel.from_model(model, (64, 64), cache_dir="onnx-cache")
    >>> pixels = torch.randn(2, 3, 64, 64)
    >>> outputs = engine(pixel_values=pixels)
    >>> outputs.logits.shape, torch.allclose(outputs.logits, model(pixels).logits, atol=1e-4)
    (torch.Size([2, 2]), True)
    ```
    """

    def __init__(self, session):
        self.session = session
        self.input_names = tuple(item.name for item in session.get_inputs())

    @classmethod
    def from_model(cls, model, image_size: tuple[int, int], cache_dir=None) -> "OnnxRuntimeModel":
        """
        The session of `model`'s graph at `image_size`, exported into `cache_dir` unless an export of the same
        weights and size is there already.

        Args:
            model ([`DualSightForImageClassification`]): the model (eval mode).
            image_size (`tuple[int, int]`): height and width of `pixel_values`, as the model's image processor makes
                them (see [`export.processor_input_size`]).
            cache_dir (`str` or `Path`, *optional*): where exports are kept; default `$DUALSIGHT_HOME/onnx`.

        The session uses as many intra-op threads as torch (`torch.get_num_threads()`).

        Raises:
            [`BackendError`]: onnxruntime or onnx is not installed.
        """
        try:
            import onnxruntime
        except ImportError as error:
            raise BackendError(MISSING_EXTRA) from error
        from ..models.default_model import dualsight_home
        from .export import export_onnx

        folder = Path(cache_dir) if cache_dir is not None else dualsight_home() / "onnx"
        path = folder / f"{type(model).__name__}-{model_fingerprint(model, image_size)}.onnx"
        if not path.exists():
            partial = path.with_suffix(".partial.onnx")  # renamed when whole: a stopped export is not reused
            try:
                export_onnx(model, partial, image_size)
            except ImportError as error:
                raise BackendError(MISSING_EXTRA) from error
            partial.replace(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # errors only: the graph optimiser's notes are not the user's concern
        return cls(onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))

    def __call__(self, **inputs) -> DualSightImageClassifierOutput:
        feed = {name: np.ascontiguousarray(inputs[name].detach().float().cpu().numpy()) for name in self.input_names}
        outputs = [torch.from_numpy(array) for array in self.session.run(None, feed)]
        return DualSightImageClassifierOutput(logits=outputs[0], object_logits=outputs[1] if len(outputs) > 1 else None)
