"""Training-time image transforms: the augmentations, the on-the-fly `ImageTransform` that reads,
augments and preprocesses each batch (`datasets.Dataset.set_transform`), and the collate function.
"""

import io
import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from ..models.images import image_source, load_image


@dataclass
class AugmentationSettings:
    """
    Training augmentations, each applied with its own probability.

    Args:
        crop_scale (`tuple[float, float]`, defaults to `(0.5, 1.0)`): area range of the random resized crop.
        flip_p (`float`, defaults to 0.5): horizontal flip.
        rotation_degrees (`float`, defaults to 10): maximum rotation, applied with `rotation_p`.
        rotation_p (`float`, defaults to 0.3)
        color_jitter (`float`, defaults to 0.2): brightness/contrast/saturation strength, applied with
            `color_jitter_p`.
        color_jitter_p (`float`, defaults to 0.5)
        jpeg_p (`float`, defaults to 0.3): re-compress as JPEG, quality uniform in `jpeg_quality`.
        jpeg_quality (`tuple[int, int]`, defaults to `(50, 95)`)
        blur_p (`float`, defaults to 0.2): Gaussian blur with sigma uniform in `blur_sigma`.
        blur_sigma (`tuple[float, float]`, defaults to `(0.1, 2.0)`)
        rescale_p (`float`, defaults to 0.2): downscale by a factor in `rescale_factor`, then back up.
        rescale_factor (`tuple[float, float]`, defaults to `(0.25, 0.75)`)
    """

    crop_scale: tuple = (0.5, 1.0)
    flip_p: float = 0.5
    rotation_degrees: float = 10.0
    rotation_p: float = 0.3
    color_jitter: float = 0.2
    color_jitter_p: float = 0.5
    jpeg_p: float = 0.3
    jpeg_quality: tuple = (50, 95)
    blur_p: float = 0.2
    blur_sigma: tuple = (0.1, 2.0)
    rescale_p: float = 0.2
    rescale_factor: tuple = (0.25, 0.75)


def random_resized_crop(image: Image.Image, rng: random.Random, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """A crop of random area fraction and aspect ratio (as torchvision's `RandomResizedCrop` picks it), not resized."""
    width, height = image.size
    for _ in range(10):
        area = width * height * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return image.crop((left, top, left + w, top + h))
    return image


def jpeg_recompress(image: Image.Image, quality: int) -> Image.Image:
    """Encode as JPEG at `quality` and decode again."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def down_up_scale(image: Image.Image, factor: float) -> Image.Image:
    """Downscale by `factor` (bilinear) and scale back to the original size."""
    width, height = image.size
    small = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.BILINEAR)
    return small.resize((width, height), Image.BILINEAR)


def augment(image: Image.Image, settings: AugmentationSettings, rng: random.Random) -> Image.Image:
    """Apply the training augmentations of `settings` to one RGB image, drawing from `rng`."""
    image = random_resized_crop(image, rng, settings.crop_scale)
    if rng.random() < settings.flip_p:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < settings.rotation_p:
        image = image.rotate(rng.uniform(-settings.rotation_degrees, settings.rotation_degrees),
                             resample=Image.BILINEAR)
    if rng.random() < settings.color_jitter_p:
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(1 + rng.uniform(-settings.color_jitter, settings.color_jitter))
    if rng.random() < settings.blur_p:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*settings.blur_sigma)))
    if rng.random() < settings.rescale_p:
        image = down_up_scale(image, rng.uniform(*settings.rescale_factor))
    if rng.random() < settings.jpeg_p:
        image = jpeg_recompress(image, rng.randint(*settings.jpeg_quality))
    return image


def augment_keeping_traces(image: Image.Image, settings: AugmentationSettings, rng: random.Random) -> Image.Image:
    """
    The training augmentations of the artifact view (see `DualSightConfig.artifact_stream`), drawn from `rng`: the
    flip, and down-up rescaling and JPEG re-compression with the probabilities of `settings`, for every image whatever
    its class, so that neither can become a shortcut. Rotation, blur and colour changes, which only the semantic view
    gets, would resample or smear every pixel; the native-resolution crop is taken afterwards by the processor.
    """
    if rng.random() < settings.flip_p:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < settings.rescale_p:
        image = down_up_scale(image, rng.uniform(*settings.rescale_factor))
    if rng.random() < settings.jpeg_p:
        image = jpeg_recompress(image, rng.randint(*settings.jpeg_quality))
    return image


class ImageTransform:
    """
    On-the-fly batch transform for `datasets.Dataset.set_transform`: reads each image with the one image loader,
    augments it when `augmentation` is given, and runs the model's image processor.

    Unreadable images never reach here in training (see `drop_unreadable`); if one does, it raises `ImageLoadError`.

    Args:
        image_processor (`BaseImageProcessor`): the model's processor (deterministic resize, crop, normalise).
        augmentation ([`AugmentationSettings`], *optional*): training augmentations; `None` for evaluation.
        seed (`int`, *optional*): seed of the augmentation random stream.
    """

    def __init__(self, image_processor, augmentation: AugmentationSettings | None = None, seed: int | None = None):
        self.image_processor = image_processor
        self.augmentation = augmentation
        self.rng = random.Random(seed)

    def __call__(self, batch: dict) -> dict:
        images = [load_image(image_source(item)) for item in batch["image"]]
        artifact_view = {}
        if self.augmentation is not None:
            if "artifact_values" in self.image_processor.model_input_names:
                # the artifact stream's own view: one random native-resolution crop of an image augmented without
                # rotation or blur (see `augment_keeping_traces`)
                artifact_view = {"artifact_images": [augment_keeping_traces(image, self.augmentation, self.rng)
                                                     for image in images], "artifact_rng": self.rng}
            images = [augment(image, self.augmentation, self.rng) for image in images]
        out = dict(self.image_processor(images, return_tensors="pt", **artifact_view))
        for key in ("label", "object_labels"):
            if key in batch:
                out["labels" if key == "label" else key] = batch[key]
        return out


def collate(features: list[dict]) -> dict:
    """Stack the transformed examples into a batch for the model."""
    batch = {key: torch.stack([f[key] for f in features]) for key in ("pixel_values", "artifact_values")
             if key in features[0]}
    if "labels" in features[0]:
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
    if "object_labels" in features[0]:
        values = [f["object_labels"] for f in features]
        dtype = torch.long if not isinstance(values[0], (list, np.ndarray)) else torch.float
        batch["object_labels"] = torch.tensor(values, dtype=dtype)
    return batch
