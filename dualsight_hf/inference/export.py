"""Export DualSight models to ONNX: both heads, dynamic batch size."""

from pathlib import Path

import torch
from torch import nn


class _BothHeads(nn.Module):
    """Plain-tensor outputs for tracing: `(logits, object_logits)`, or `(logits,)` without an object head."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, artifact_values=None):
        outputs = self.model(pixel_values=pixel_values, artifact_values=artifact_values, return_dict=True)
        if outputs.object_logits is None:
            return (outputs.logits,)
        return outputs.logits, outputs.object_logits


def export_onnx(model, path, image_size: tuple[int, int] = (224, 224), opset: int = 17) -> Path:
    """
    Write an ONNX model of both heads.

    Inputs: `pixel_values` (float32, `(batch, 3, height, width)`, as the model's image processor makes them) and,
    for a model with an artifact stream, `artifact_values` (float32, `(batch, crops, 3, crop_size, crop_size)`).
    Outputs: `logits` (authenticity) and, with an object head, `object_logits`; the batch axis (and the number of
    crops) is dynamic.

    Args:
        model ([`DualSightForImageClassification`]): the model (exported in float32, eval mode).
        path (`str` or `Path`): the `.onnx` file to write.
        image_size (`tuple[int, int]`, *optional*, defaults to `(224, 224)`): height and width of the input.
        opset (`int`, *optional*, defaults to 17): ONNX opset.

    Returns:
        `Path` of the written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _BothHeads(model.float()).eval()  # the exporter restores the wrapper's mode afterwards
    dummies, inputs, axes = (torch.zeros(2, 3, *image_size),), ["pixel_values"], {"pixel_values": {0: "batch"}}
    stream = model.config.artifact_stream
    if stream:
        dummies += (torch.rand(2, 2, 3, stream["crop_size"], stream["crop_size"]),)
        inputs.append("artifact_values")
        axes["artifact_values"] = {0: "batch", 1: "crops"}
    names = ["logits"] + (["object_logits"] if model.config.num_object_labels else [])
    torch.onnx.export(wrapper, dummies, str(path), input_names=inputs, output_names=names,
                      dynamic_axes={**axes, **{n: {0: "batch"} for n in names}}, opset_version=opset, dynamo=False)
    return path


def processor_input_size(processor) -> tuple[int, int]:
    """Height and width of the `pixel_values` an image processor makes (its crop, else its square size); a
    [`DualSightImageProcessor`] is read through the backbone's processor it wraps."""
    semantic = getattr(processor, "semantic", processor)
    crop = getattr(semantic, "crop_size", None) or semantic.size
    return (crop.height, crop.width) if getattr(crop, "height", None) else (crop.shortest_edge, crop.shortest_edge)


def export_model(name_or_path: str, path, opset: int = 17) -> tuple[Path, str]:
    """
    Export a model folder or Hub id (see [`export_onnx`]) at the input size its image processor makes.

    Args:
        name_or_path (`str`): the model.
        path (`str` or `Path`): the `.onnx` file to write.
        opset (`int`, *optional*, defaults to 17): ONNX opset.

    Returns:
        `(path, inputs)`: the written file, and its inputs in words
        (`"pixel_values: batch x 3 x 224 x 224; artifact_values: batch x crops x 3 x 64 x 64"`).
    """
    from ..models.loading import load_image_processor, load_model

    size = processor_input_size(load_image_processor(name_or_path))
    model = load_model(name_or_path)
    written = export_onnx(model, path, size, opset)
    inputs = f"pixel_values: batch x 3 x {size[0]} x {size[1]}"
    if model.config.artifact_stream:
        side = model.config.artifact_stream["crop_size"]
        inputs += f"; artifact_values: batch x crops x 3 x {side} x {side}"
    return written, inputs
