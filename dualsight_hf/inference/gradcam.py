"""Grad-CAM explanations of the authenticity decision on a backbone's last feature map."""

import math

import numpy as np
import torch
from PIL import Image


def grad_cam(model, inputs: dict[str, torch.Tensor], target_class: int) -> np.ndarray | None:
    """
    Grad-CAM (Selvaraju et al., 2017) of one image for one authenticity class: the last hidden state of the first
    backbone, weighted by the mean gradient of the class logit per channel, rectified and scaled to [0, 1]. With an
    artifact stream it explains the semantic backbone's share of the decision.

    Args:
        model ([`DualSightForImageClassification`]): the model (any dtype; the map is computed in float32).
        inputs (`dict[str, torch.Tensor]`): one preprocessed image, as the model's image processor makes it
            (`pixel_values` of shape `(1, 3, height, width)`, and `artifact_values` with an artifact stream).
        target_class (`int`): the authenticity class to explain.

    Returns:
        `np.ndarray` of shape `(h, w)` (the feature map's grid), values in [0, 1]; `None` when the authenticity
        head does not read the semantic backbone (an artifact-only model).
    """
    model = model.float()
    captured = {}

    def keep(module, inputs, output):
        hidden = output.last_hidden_state
        hidden.retain_grad()
        captured["hidden"] = hidden

    handle = model.dualsight.backbone.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            # the input requires grad so that a frozen backbone still builds the graph back to its feature map
            inputs = {name: values.float() for name, values in inputs.items()}
            inputs["pixel_values"].requires_grad_(True)
            logits = model(**inputs).logits
            model.zero_grad(set_to_none=True)
            logits[0, target_class].backward()
    finally:
        handle.remove()
    if "hidden" not in captured or captured["hidden"].grad is None:
        return None
    hidden, grads = captured["hidden"].detach()[0], captured["hidden"].grad[0]
    if hidden.ndim == 2:  # a token sequence: drop a leading class token, lay the rest on its square grid
        side = math.isqrt(hidden.shape[0])
        hidden, grads = hidden[-side * side:], grads[-side * side:]
        hidden = hidden.T.reshape(-1, side, side)
        grads = grads.T.reshape(-1, side, side)
    weights = grads.mean(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * hidden).sum(0))
    cam = cam / cam.max() if cam.max() > 0 else cam
    return cam.cpu().numpy()


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heatmap, resized to `image` and coloured with matplotlib's `jet`, blended over it."""
    from matplotlib import colormaps

    heat = Image.fromarray(np.uint8(cam * 255)).resize(image.size, Image.BILINEAR)
    coloured = colormaps["jet"](np.asarray(heat) / 255.0)[..., :3]
    blended = (1 - alpha) * np.asarray(image.convert("RGB"), dtype=np.float64) / 255 + alpha * coloured
    return Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255))
