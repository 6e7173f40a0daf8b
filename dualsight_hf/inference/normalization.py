"""The rescale and normalise steps that prediction takes out of a model's image processor, to run them once per
batch on the model's device (the processor itself is loaded by `loading.load_image_processor`)."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PixelNormalization:
    """
    The rescale and normalise steps of an image processor, taken out of it to run once per batch as tensor
    operations on the model's device, after the resize and crop steps have made `uint8` images (in workers, where
    `uint8` moves four times less data than `float32`). The result equals the processor's own output to within
    float32 rounding (1e-6).

    Use [`PixelNormalization.split`] to get one with the processor arguments that leave those steps out.

    Args:
        rescale_factor (`float`, *optional*): the processor's `rescale_factor` when it rescales, else `None`.
        image_mean (`tuple[float, ...]`, *optional*), image_std (`tuple[float, ...]`, *optional*): the processor's
            per-channel statistics when it normalises, else `None`.

    Example:

    ```python
    >>> from PIL import Image
    >>> from transformers import MobileNetV2Config
    >>> from dualsight_hf.models.image_processing import image_processor_for_backbone
    >>> from dualsight_hf.inference.normalization import PixelNormalization
    >>> processor = image_processor_for_backbone(MobileNetV2Config())
    >>> normalization, deferred = PixelNormalization.split(processor)
    >>> geometry = processor(Image.new("RGB", (300, 200)), return_tensors="pt", **deferred)["pixel_values"]
    >>> geometry.dtype, normalization(geometry).dtype
    (torch.uint8, torch.float32)
    ```
    """

    rescale_factor: float | None
    image_mean: tuple[float, ...] | None
    image_std: tuple[float, ...] | None

    @classmethod
    def split(cls, image_processor) -> tuple["PixelNormalization | None", dict]:
        """
        The deferred steps of `image_processor` (a stock processor, or a [`DualSightImageProcessor`], whose semantic
        view is the one normalised) and the call arguments that make the processor skip them. `(None, {})` when they
        cannot be deferred: the processor pads after normalising, or has no such steps.
        """
        semantic = getattr(image_processor, "semantic", image_processor)
        rescale, normalize = getattr(semantic, "do_rescale", None), getattr(semantic, "do_normalize", None)
        if rescale is None or normalize is None or getattr(semantic, "do_pad", False) or not (rescale or normalize):
            return None, {}
        normalization = cls(rescale_factor=float(semantic.rescale_factor) if rescale else None,
                            image_mean=tuple(semantic.image_mean) if normalize else None,
                            image_std=tuple(semantic.image_std) if normalize else None)
        return normalization, {"do_rescale": False, "do_normalize": False}

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`pixel_values` (`(batch, channels, height, width)`, as the processor made them with the deferred steps
        left out) rescaled and normalised, in float32 on their own device."""
        values = pixel_values.float()
        if self.rescale_factor is not None:
            values = values * self.rescale_factor
        if self.image_mean is not None:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(self.image_mean, device=values.device).view(shape)
            std = torch.tensor(self.image_std, device=values.device).view(shape)
            values = (values - mean) / std
        return values
