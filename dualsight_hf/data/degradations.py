"""Image degradations for robustness evaluation: applied to every class alike, deterministic given a seed."""

import random

import numpy as np
from PIL import Image, ImageFilter

from .augmentation import down_up_scale, jpeg_recompress

#: Each degradation's default levels (`dualsight evaluate --perturb NAME` without levels).
DEFAULT_LEVELS = {
    "jpeg": (95, 75, 50),  # JPEG quality
    "downscale": (0.5, 0.25),  # scale factor, then back to the original size
    "resize": (0.5,),  # scale factor; the image stays smaller
    "blur": (1.0, 2.0),  # Gaussian sigma in pixels
    "crop": (0.75, 0.5),  # centre crop keeping this fraction of each side
    "noise": (5.0, 10.0),  # standard deviation of additive Gaussian noise, on the 0-255 scale
}


def parse_perturbation(spec: str) -> list[tuple[str, float]]:
    """`"jpeg:95,75"` -> `[("jpeg", 95.0), ("jpeg", 75.0)]`; `"blur"` -> the default levels of blur."""
    name, _, levels = spec.partition(":")
    if name not in DEFAULT_LEVELS:
        raise ValueError(f"unknown degradation '{name}': choose from {', '.join(DEFAULT_LEVELS)}")
    values = [float(v) for v in levels.split(",") if v.strip()] if levels else list(DEFAULT_LEVELS[name])
    return [(name, value) for value in values]


def degrade(image: Image.Image, name: str, level: float, seed: int = 0) -> Image.Image:
    """
    One degradation of an RGB image.

    Args:
        image (`PIL.Image.Image`): the input (RGB).
        name (`str`): `jpeg`, `downscale`, `resize`, `blur`, `crop` or `noise` (see `DEFAULT_LEVELS` for the
            level's meaning).
        level (`float`): the degradation's strength.
        seed (`int`, *optional*, defaults to 0): seed of the random part (noise), so a run can be repeated exactly.

    Returns:
        `PIL.Image.Image`: a new RGB image (the same size, except for `crop` and `resize`).
    """
    if name == "jpeg":
        return jpeg_recompress(image, int(level))
    if name == "downscale":
        return down_up_scale(image, level)
    if name == "resize":
        width, height = image.size
        return image.resize((max(1, round(width * level)), max(1, round(height * level))), Image.LANCZOS)
    if name == "blur":
        return image.filter(ImageFilter.GaussianBlur(level))
    if name == "crop":
        width, height = image.size
        keep_w, keep_h = max(1, round(width * level)), max(1, round(height * level))
        left, top = (width - keep_w) // 2, (height - keep_h) // 2
        return image.crop((left, top, left + keep_w, top + keep_h))
    if name == "noise":
        rng = np.random.default_rng(random.Random(seed).getrandbits(64))
        noisy = np.asarray(image, dtype=np.float64) + rng.normal(0.0, level, (image.height, image.width, 3))
        return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
    raise ValueError(f"unknown degradation '{name}'")
