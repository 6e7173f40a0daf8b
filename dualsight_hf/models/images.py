"""The one image loader behind prediction, training, evaluation and the demo.

Every image that DualSight reads goes through `load_image`: it opens paths, bytes and PIL images alike, refuses what it
cannot read with an `ImageLoadError` whose message is one line naming the file and the cause, and turns everything it
can read into an upright 8-bit RGB image.
"""

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (and AVIF on older Pillows) through the optional `pillow-heif` plugin: `pip install dualsight-hf[heif]`
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:
    pillow_heif = None

#: Largest image (in pixels) that is decoded; larger ones are refused from their header, before decoding.
#: Override with the `DUALSIGHT_MAX_IMAGE_PIXELS` environment variable or the `max_pixels` argument.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970  # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS)

#: File name suffixes that folder walking treats as images.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jfif", ".svg"}
)

#: Colour that transparent pixels are composited onto.
BACKGROUND_RGB = (255, 255, 255)


class ImageLoadError(ValueError):
    """An image could not be read; `str(error)` is one line: `<source>: <cause>`."""

    def __init__(self, source: str, cause: str):
        self.source = source
        self.cause = cause
        super().__init__(f"{source}: {cause}")


class ImageTooLargeError(ImageLoadError):
    """An image has more pixels than the decoding limit allows (`max_image_pixels`, decompression bombs)."""


def max_image_pixels() -> int:
    """The decoding limit in pixels, from `DUALSIGHT_MAX_IMAGE_PIXELS` or `DEFAULT_MAX_IMAGE_PIXELS`."""
    return int(os.environ.get("DUALSIGHT_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS))


def _describe_unreadable(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG vector images are not supported; rasterise it to PNG first"
    if text.startswith((b"<!doctype html", b"<html")):
        return "not an image: the file holds HTML"
    if head and all(32 <= byte < 127 or byte in (9, 10, 13) for byte in head[:512]):
        return "not an image: the file holds text"
    return "not a recognised image format"


def _to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB version of any Pillow mode; transparency is composited onto `BACKGROUND_RGB`."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def load_image(source, max_pixels: int | None = None, name: str | None = None) -> Image.Image:
    """
    Read one image as an upright 8-bit RGB `PIL.Image.Image`.

    Args:
        source (`str`, `os.PathLike`, `bytes` or `PIL.Image.Image`):
            A file path, the file's bytes, or an image already opened.
        max_pixels (`int`, *optional*):
            Refuse images with more pixels than this, judged from the header before decoding (decompression bombs).
            Defaults to `max_image_pixels()`.
        name (`str`, *optional*):
            How to name the image in error messages; defaults to the path, or `<bytes>` / `<image>`.

    Returns:
        `PIL.Image.Image` in mode `"RGB"`: the first frame of an animation, rotated as its EXIF orientation says,
        transparency composited onto white, 16-bit and CMYK data converted.

    Raises:
        `ImageLoadError`: with a one-line message naming the source and the cause.

    Example:

    ```python
    >>> from dualsight_hf.models.images import ImageLoadError, load_image
    >>> try:
    ...     load_image(b"<html>not an image</html>", name="page.jpg")
    ... except ImageLoadError as error:
    ...     print(error)
    page.jpg: not an image: the file holds HTML
    ```
    """
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if isinstance(source, Image.Image):
        label = name or "<image>"
        image = source
    else:
        if isinstance(source, (bytes, bytearray)):
            label, data = name or "<bytes>", bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            label = name or str(path)
            if path.is_dir():
                raise ImageLoadError(label, "is a folder, not an image file")
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise ImageLoadError(label, "no such file") from None
            except OSError as error:
                raise ImageLoadError(label, f"cannot read the file ({error.strerror or error})") from None
        else:
            raise ImageLoadError(name or repr(source)[:80], f"unsupported input type {type(source).__name__}")
        if not data:
            raise ImageLoadError(label, "empty file (0 bytes)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as error:
            raise ImageTooLargeError(label, f"image too large to decode safely ({error})") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise ImageLoadError(label, _describe_unreadable(data[:1024])) from None

    width, height = image.size
    if width * height > limit:
        raise ImageTooLargeError(
            label, f"{width}x{height} pixels exceeds the limit of {limit} pixels (set DUALSIGHT_MAX_IMAGE_PIXELS)"
        )
    if width < 1 or height < 1:
        raise ImageLoadError(label, f"image has no pixels ({width}x{height})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if getattr(image, "is_animated", False):
                image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError, IndexError) as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageLoadError(label, f"corrupt or truncated image data ({cause})") from None


def iter_image_files(paths, recursive: bool = True):
    """
    Expand files and folders into image file paths lazily, in a stable order, without stopping at a bad entry.

    Args:
        paths (`Iterable[str | os.PathLike]`): files and folders; folders are walked for `IMAGE_SUFFIXES` files.
        recursive (`bool`, *optional*, defaults to `True`): walk sub-folders too.

    Yields:
        `Path` for each file named directly (whatever its suffix, and also when it does not exist, so that loading
        it reports the error) and for each image file found in a folder; an `ImageLoadError` for a folder that
        holds no image file. Folders are walked one directory at a time, so memory stays bounded.
    """
    for entry in paths:
        path = Path(entry)
        if not path.is_dir():
            yield path
            continue
        found = 0
        for root, folders, files in os.walk(path):
            folders.sort()
            if not recursive:
                folders.clear()
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    found += 1
                    yield Path(root) / name
        if not found:
            yield ImageLoadError(str(path), "folder contains no image files")


def image_source(item):
    """A path, bytes or PIL image from a dataset cell (`datasets.Image(decode=False)` cells are dicts)."""
    if isinstance(item, dict):
        return item.get("bytes") or item.get("path")
    return item
