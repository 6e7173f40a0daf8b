"""Image processor of DualSight models with an artifact stream: a resized view for the semantic backbone and
native-resolution crops for the artifact stream."""

import random

import numpy as np
import transformers
from PIL import Image
from transformers import PreTrainedConfig
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_transforms import to_pil_image
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
from transformers.processing_utils import ImagesKwargs

from .configuration import ARTIFACT_STREAM_DEFAULTS


def crop_positions(length: int, crop_size: int, count: int) -> list[int]:
    """
    `count` crop offsets along one axis of `length` pixels, evenly spaced from the start to the end (one crop: the
    centre), each rounded down to an even number so that every crop keeps the image's 2x2 pixel grid.
    """
    room = max(0, length - crop_size)
    if count == 1:
        return [room // 2 // 2 * 2]
    return [room * i // (count - 1) // 2 * 2 for i in range(count)]


def native_crops(image: np.ndarray, crop_size: int, crops_per_side: int = 1,
                 rng: random.Random | None = None) -> np.ndarray:
    """
    Crops of an image at its own resolution, scaled to [0, 1].

    An image smaller than `crop_size` along a side is first cut to an even size along that side and then tiled
    (wrapped) to `crop_size` from its top-left corner, so that every crop holds image pixels only and every tile
    starts on the image's 2x2 pixel grid (the 5x5 SRM filters still see the seams between tiles).

    Args:
        image (`np.ndarray` of shape `(height, width, 3)`, `uint8`): the image.
        crop_size (`int`): side of a crop.
        crops_per_side (`int`, *optional*, defaults to 1): without `rng`, a grid of `crops_per_side` x
            `crops_per_side` crops spread over the image (one: the centre crop).
        rng (`random.Random`, *optional*): draw one crop at a random even position instead (training).

    Returns:
        `np.ndarray` of shape `(crops, 3, crop_size, crop_size)`, `float32`.
    """
    height, width = image.shape[:2]
    if height < crop_size or width < crop_size:
        image = image[: height - height % 2 if 1 < height < crop_size else height,
                      : width - width % 2 if 1 < width < crop_size else width]
        height, width = image.shape[:2]
        image = np.pad(image, ((0, max(0, crop_size - height)), (0, max(0, crop_size - width)), (0, 0)), mode="wrap")
        height, width = image.shape[:2]
    if rng is not None:
        tops = [2 * rng.randint(0, (height - crop_size) // 2)]
        lefts = [2 * rng.randint(0, (width - crop_size) // 2)]
    else:
        tops = crop_positions(height, crop_size, crops_per_side)
        lefts = crop_positions(width, crop_size, crops_per_side)
    crops = [image[top:top + crop_size, left:left + crop_size] for top in tops for left in lefts]
    return np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


class DualSightImageProcessorKwargs(ImagesKwargs, total=False):
    """The settings of [`DualSightImageProcessor`] beyond the stock ones."""

    semantic_processor: dict
    artifact_crop_size: int
    artifact_crops_per_side: int


class DualSightImageProcessor(BaseImageProcessor):
    r"""
    Two views of each image: `pixel_values`, made by the semantic backbone's own image processor (resize, crop,
    normalise), and `artifact_values`, crops at the image's native resolution (see [`native_crops`]) for the artifact
    stream of [`DualSightForImageClassification`].

    Args:
        semantic_processor (`dict` or `BaseImageProcessor`, *optional*):
            The stock transformers processor of the semantic backbone, or its `to_dict()` (with its
            `image_processor_type`). Defaults to the ResNet processor of [`image_processor_for_backbone`].
        artifact_crop_size (`int`, *optional*, defaults to 64): side of a native-resolution crop.
        artifact_crops_per_side (`int`, *optional*, defaults to 3): the test-time crop grid is
            `artifact_crops_per_side` x `artifact_crops_per_side`.

    Call arguments: `images` (a PIL image, an array, a batch array or a list of them), `return_tensors` (`"pt"`,
    `"np"` or `None`), `artifact_images` (*optional*: other versions of the same images for the artifact view, e.g.
    augmented without resampling in training; default `images`) and `artifact_rng` (`random.Random`, *optional*:
    one randomly placed crop per image instead of the grid, for training).

    Example:

    ```python
    >>> from PIL import Image
    >>> from transformers import MobileNetV2Config
    >>> from dualsight_hf.models.image_processing import DualSightImageProcessor
    >>> from dualsight_hf.models.image_processing import image_processor_for_backbone
    >>> processor = DualSightImageProcessor(image_processor_for_backbone(MobileNetV2Config()),
    ...                                     artifact_crop_size=32, artifact_crops_per_side=2)
    >>> batch = processor(Image.new("RGB", (100, 80)), return_tensors="pt")
    >>> batch["pixel_values"].shape, batch["artifact_values"].shape
    (torch.Size([1, 3, 224, 224]), torch.Size([1, 4, 3, 32, 32]))
    ```
    """

    model_input_names = ["pixel_values", "artifact_values"]
    valid_kwargs = DualSightImageProcessorKwargs

    def __init__(self, semantic_processor: dict | BaseImageProcessor | None = None,
                 artifact_crop_size: int = ARTIFACT_STREAM_DEFAULTS["crop_size"],
                 artifact_crops_per_side: int = ARTIFACT_STREAM_DEFAULTS["crops_per_side"], **kwargs):
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        if isinstance(semantic_processor, BaseImageProcessor):
            semantic_processor = semantic_processor.to_dict()
        if semantic_processor is None:
            semantic_processor = {"image_processor_type": "ConvNextImageProcessorPil", "size": {"shortest_edge": 224},
                                  "crop_pct": 224 / 256, "resample": 2, "image_mean": [0.485, 0.456, 0.406],
                                  "image_std": [0.229, 0.224, 0.225]}
        self.semantic_processor = semantic_processor
        self.artifact_crop_size = int(artifact_crop_size)
        self.artifact_crops_per_side = int(artifact_crops_per_side)

    @property
    def semantic(self) -> BaseImageProcessor:
        """`BaseImageProcessor`: the semantic backbone's processor, rebuilt from `semantic_processor`."""
        if getattr(self, "_semantic", None) is None:
            settings = dict(self.semantic_processor)
            name = settings.pop("image_processor_type")
            # the PIL backend (no torchvision needed), which saves itself under the family's plain name
            processor_class = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
            settings.pop("auto_map", None)
            self._semantic = processor_class(**settings)
        return self._semantic

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.pop("_semantic", None)
        return output

    def __call__(self, images, return_tensors=None, artifact_images=None, artifact_rng: random.Random | None = None,
                 **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, artifact_images=artifact_images,
                               artifact_rng=artifact_rng, **kwargs)

    def preprocess(self, images, return_tensors=None, artifact_images=None, artifact_rng: random.Random | None = None,
                   **kwargs) -> BatchFeature:
        """The two views of `images`; see the class documentation."""
        images = _as_pil_list(images)
        artifact_images = images if artifact_images is None else _as_pil_list(artifact_images)
        if len(artifact_images) != len(images):
            raise ValueError(f"artifact_images has {len(artifact_images)} images for {len(images)} images")
        pixel_values = self.semantic(images, return_tensors="np", **kwargs)["pixel_values"]
        crops = [native_crops(np.asarray(image.convert("RGB")), self.artifact_crop_size, self.artifact_crops_per_side,
                              artifact_rng) for image in artifact_images]
        return BatchFeature({"pixel_values": pixel_values, "artifact_values": np.stack(crops)},
                            tensor_type=return_tensors)


def _as_pil_list(images) -> list[Image.Image]:
    """One image, a list of images or a batch array (`(batch, height, width, channels)` or channels first) as a list
    of PIL images."""
    if not isinstance(images, (list, tuple)):
        images = list(images) if getattr(images, "ndim", 3) == 4 else [images]
    return [image if isinstance(image, Image.Image) else to_pil_image(image) for image in images]


__all__ = ["DualSightImageProcessor", "crop_positions", "native_crops"]


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
    >>> from dualsight_hf.models.image_processing import image_processor_for_backbone
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
    >>> from dualsight_hf.models.image_processing import image_processor_for_model
    >>> config = DualSightConfig(backbone_config=MobileNetV2Config(), artifact_stream={"crop_size": 32})
    >>> type(image_processor_for_model(config)).__name__
    'DualSightImageProcessor'
    ```
    """
    semantic_processor = semantic_processor or image_processor_for_backbone(config.backbone_config)
    stream = config.artifact_stream
    if not stream:
        return semantic_processor
    return DualSightImageProcessor(semantic_processor, artifact_crop_size=stream["crop_size"],
                                   artifact_crops_per_side=stream["crops_per_side"])
