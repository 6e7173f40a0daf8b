"""Every kind of bad or odd input gets a correct image or a one-line `ImageLoadError` naming the file and cause."""

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from conftest import random_image
from PIL import Image, features

from dualsight_hf.models.images import ImageLoadError, iter_image_files, load_image


def error_for(source, **kwargs) -> str:
    with pytest.raises(ImageLoadError) as caught:
        load_image(source, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def encoded(image: Image.Image, fmt: str, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width x height` pixels, with a few bytes of data: a decompression bomb's shape."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def test_missing_path(tmp_path):
    assert error_for(tmp_path / "gone.jpg") == f"{tmp_path / 'gone.jpg'}: no such file"


def test_folder_with_no_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    entries = list(iter_image_files([tmp_path]))
    assert len(entries) == 1 and isinstance(entries[0], ImageLoadError)
    assert str(entries[0]) == f"{tmp_path}: folder contains no image files"
    assert "is a folder" in error_for(tmp_path)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert error_for(tmp_path / "empty.jpg").endswith("empty.jpg: empty file (0 bytes)")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(tmp_path, fmt):
    data = encoded(random_image(256, 256, seed=5), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    message = error_for(path)
    assert message.startswith(f"{path}: corrupt or truncated image data")


@pytest.mark.parametrize("content, cause", [
    (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "not an image: the file holds HTML"),
    (b"just some notes\nnot a picture\n", "not an image: the file holds text"),
    (bytes(range(256)) * 4, "not a recognised image format"),
])
def test_non_image_named_jpg(tmp_path, content, cause):
    (tmp_path / "photo.jpg").write_bytes(content)
    assert error_for(tmp_path / "photo.jpg") == f"{tmp_path / 'photo.jpg'}: {cause}"


def test_svg_is_not_supported(tmp_path):
    (tmp_path / "logo.svg").write_text('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>')
    assert "SVG vector images are not supported" in error_for(tmp_path / "logo.svg")


def test_decompression_bomb_is_refused_quickly_with_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_claiming(50000, 50000))
    code = f"""
import resource, time
from dualsight_hf.models.images import ImageLoadError, load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    load_image({str(bomb)!r})
except ImageLoadError as error:
    print(error)
print(time.perf_counter() - start, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    message, numbers = result.stdout.strip().splitlines()
    seconds, extra_megabytes = map(float, numbers.split())
    assert "bomb.png" in message and ("too large" in message or "exceeds the limit" in message)
    assert seconds < 1.0 and extra_megabytes < 50


def test_pixel_limit_is_configurable(monkeypatch):
    image = random_image(20, 20)
    assert "exceeds the limit of 100 pixels" in error_for(encoded(image, "PNG"), max_pixels=100)
    monkeypatch.setenv("DUALSIGHT_MAX_IMAGE_PIXELS", "399")
    assert "exceeds the limit of 399 pixels" in error_for(encoded(image, "PNG"))
    monkeypatch.setenv("DUALSIGHT_MAX_IMAGE_PIXELS", "400")
    assert load_image(encoded(image, "PNG")).size == (20, 20)


def test_one_by_one_image():
    image = load_image(encoded(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))
    assert image.size == (1, 1) and image.getpixel((0, 0)) == (10, 20, 30)


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    image = load_image(encoded(cmyk, "JPEG", quality=95))
    r, g, b = image.getpixel((8, 8))
    assert image.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_sixteen_bit_png():
    array = np.full((8, 8), 65535, dtype=np.uint16)
    array[:, :4] = 32896  # half of 65535 (~128 in 8 bits)
    image = load_image(encoded(Image.fromarray(array), "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((6, 0)) == (255, 255, 255)
    assert abs(image.getpixel((1, 0))[0] - 128) <= 1


def test_greyscale():
    image = load_image(encoded(Image.new("L", (4, 4), 77), "PNG"))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (77, 77, 77)


def test_la_with_transparency_is_composited_on_white():
    la = Image.new("LA", (4, 4), (0, 0))  # black, fully transparent
    la.putpixel((0, 0), (0, 255))  # one opaque black pixel
    image = load_image(encoded(la, "PNG"))
    assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((0, 0)) == (0, 0, 0)


def test_palette_with_transparency_is_composited_on_white():
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    p.putpixel((0, 0), 1)
    data = encoded(p, "PNG", transparency=0)
    image = load_image(data)
    assert image.getpixel((2, 2)) == (255, 255, 255) and image.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_first_frame(fmt):
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    assert Image.open(io.BytesIO(data)).n_frames == 3
    r, g, b = load_image(data).getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    upright = load_image(encoded(image, "JPEG", exif=exif, quality=95))
    assert upright.size == (20, 40)
    assert upright.getpixel((10, 5))[0] > 200 and upright.getpixel((10, 35))[0] < 50  # white half on top


def test_very_wide_panorama():
    assert load_image(encoded(random_image(6000, 80), "JPEG")).size == (6000, 80)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF support")
def test_avif():
    assert load_image(encoded(Image.new("RGB", (16, 16), (0, 200, 0)), "AVIF")).getpixel((8, 8))[1] > 150


def test_heic():
    pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC needs the optional extra: pip install "
                                                            "dualsight-hf[heif]")
    buffer = io.BytesIO()
    pillow_heif.from_pillow(Image.new("RGB", (16, 16), (0, 0, 220))).save(buffer, format="HEIF")
    assert load_image(buffer.getvalue()).getpixel((8, 8))[2] > 150


def test_unsupported_input_type():
    assert "unsupported input type int" in error_for(42)
