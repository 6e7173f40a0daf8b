"""Image processors that fit a backbone: the stock transformers processors, PIL backend, no torchvision needed."""

from dataclasses import dataclass

import torch
import transformers
from transformers import AutoImageProcessor, PreTrainedConfig
from transformers.image_processing_utils import BaseImageProcessor
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Where a family's stock defaults differ from how its classifiers were trained: ResNet, as torchvision and the
# original DualSight preprocess it (resize the short side to 256, centre crop 224, ImageNet mean/std).
_OVERRIDES = {
    "resnet": {"size": {"shortest_edge": 224}, "crop_pct": 224 / 256, "resample": 2, "image_mean": IMAGENET_MEAN,
               "image_std": IMAGENET_STD},
}


def image_processor_for_backbone(backbone_config: PreTrainedConfig, **overrides) -> BaseImageProcessor:
    """
    The stock image processor of a backbone family, with the settings its ImageNet classifiers use.

    Args:
        backbone_config (`PreTrainedConfig`): the backbone's configuration (e.g. `model.config.backbone_config`).
        **overrides: processor arguments that replace the defaults (`size`, `crop_size`, `image_mean`, ...).

    Returns:
        `BaseImageProcessor`: e.g. `ConvNextImageProcessorPil` for ResNet (resize 256, centre crop 224, ImageNet
        mean/std), `MobileNetV2ImageProcessorPil` for MobileNetV2, `ViTImageProcessorPil` for ViT.

    Example:

    ```python
    >>> from transformers import ResNetConfig
    >>> from dualsight_hf.processing import image_processor_for_backbone
    >>> processor = image_processor_for_backbone(ResNetConfig())
    >>> processor.size.shortest_edge, processor.crop_pct, processor.image_mean
    (224, 0.875, (0.485, 0.456, 0.406))
    ```
    """
    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(backbone_config.model_type)
    if not names:
        raise ValueError(f"No image processor is known for backbone type '{backbone_config.model_type}'")
    class_name = names.get("pil") if isinstance(names, dict) else names
    processor_class = getattr(transformers, class_name)
    kwargs = {**_OVERRIDES.get(backbone_config.model_type, {}), **overrides}
    return processor_class(**kwargs)


def image_processor_for_model(config, semantic_processor: BaseImageProcessor | None = None) -> BaseImageProcessor:
    """
    The image processor of a DualSight model: the semantic backbone's stock processor, wrapped in a
    [`DualSightImageProcessor`] that also makes the native-resolution crops when `config.artifact_stream` is set.

    Args:
        config ([`DualSightConfig`]): the model's configuration.
        semantic_processor (`BaseImageProcessor`, *optional*): the semantic backbone's processor (e.g. loaded from
            its pretrained checkpoint); by default [`image_processor_for_backbone`] of the first backbone.

    Example:

    ```python
    >>> from transformers import MobileNetV2Config
    >>> from dualsight_hf import DualSightConfig
    >>> from dualsight_hf.processing import image_processor_for_model
    >>> config = DualSightConfig(backbone_config=MobileNetV2Config(), artifact_stream={"crop_size": 32})
    >>> type(image_processor_for_model(config)).__name__
    'DualSightImageProcessor'
    ```
    """
    from .image_processing import DualSightImageProcessor

    semantic_processor = semantic_processor or image_processor_for_backbone(config.backbone_config)
    stream = config.artifact_stream
    if not stream:
        return semantic_processor
    return DualSightImageProcessor(semantic_processor, artifact_crop_size=stream["crop_size"],
                                   artifact_crops_per_side=stream["crops_per_side"])


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
    >>> from dualsight_hf.processing import PixelNormalization, image_processor_for_backbone
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


def load_image_processor(name_or_path: str, **kwargs) -> BaseImageProcessor:
    """`AutoImageProcessor.from_pretrained` with the PIL backend, which needs no torchvision.

    Args:
        name_or_path (`str`): Hub id or folder of a model with a `preprocessor_config.json`.
        **kwargs: passed on to `AutoImageProcessor.from_pretrained` (`revision`, `trust_remote_code`, ...).

    Raises:
        `ModelLoadError`: with one line naming the model and the cause.
    """
    from .loading import ModelLoadError

    kwargs.setdefault("backend", "pil")
    try:
        return AutoImageProcessor.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{name_or_path}: cannot load the image processor ({cause})") from error
