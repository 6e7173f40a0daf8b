"""The tiny autoencoder of aligned training pairs: it loads the shared TAEF2 weights strictly, keeps an image's
content (PSNR) while changing its pixels, and refuses what it cannot do in one line."""

import numpy as np
import pytest
import torch
from conftest import REPO, shared_path
from PIL import Image

from dualsight_hf.data.autoencoder import SCALE, TinyAutoencoder


@pytest.fixture(scope="module")
def autoencoder() -> TinyAutoencoder:
    return TinyAutoencoder.from_folder(shared_path("weights", "taef2-flux2-tiny-autoencoder"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / ((a.astype(float) - b.astype(float)) ** 2).mean()))


def test_a_round_trip_keeps_the_content_and_changes_the_pixels(autoencoder):
    photo = Image.open(REPO / "examples" / "real" / "chelsea.png").convert("RGB")
    reconstruction = autoencoder.reconstruct(photo, size=224)
    assert reconstruction.size == (224, 224) and reconstruction.mode == "RGB"
    scale = 224 / min(photo.size)
    resized = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
    left, top = (resized.width - 224) // 2, (resized.height - 224) // 2
    original = np.asarray(resized.crop((left, top, left + 224, top + 224)))
    assert 28 < psnr(np.asarray(reconstruction), original) < 45  # the same picture, not the same pixels
    # a random init would not keep the picture: the weights are the ones that were loaded
    torch.manual_seed(0)
    assert psnr(np.asarray(TinyAutoencoder().eval().reconstruct(photo, size=224)), original) < 15


def test_without_a_size_the_image_is_cropped_to_the_latent_grid(autoencoder):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 53, 3), dtype=np.uint8))
    assert autoencoder.reconstruct(image).size == (53 // SCALE * SCALE, 70 // SCALE * SCALE)


def test_what_it_cannot_do_is_one_line(tmp_path, autoencoder):
    with pytest.raises(ValueError, match="multiple of 8"):
        autoencoder.reconstruct(Image.new("RGB", (64, 64)), size=100)
    with pytest.raises(FileNotFoundError, match="taef2_encoder.pth"):
        TinyAutoencoder.from_folder(tmp_path)
