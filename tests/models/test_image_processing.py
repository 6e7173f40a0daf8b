"""The two-input image processor: native-resolution crops beside the semantic view, saved and loaded."""

import random

import numpy as np
import pytest
import torch
from conftest import random_image
from PIL import Image
from transformers import AutoImageProcessor, MobileNetV2Config

from dualsight_hf import DualSightConfig, DualSightImageProcessor, image_processor_for_backbone
from dualsight_hf.models.image_processing import crop_positions, image_processor_for_model, native_crops


def coordinate_image(height: int, width: int) -> np.ndarray:
    """Red = row, green = column: every crop tells where it came from."""
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, columns, np.zeros_like(rows)], -1).astype(np.uint8)


def test_crop_positions_span_the_image_with_even_offsets():
    assert crop_positions(100, 32, 3) == [0, 34, 68]
    assert crop_positions(101, 32, 1) == [34]
    assert crop_positions(100, 32, 2) == [0, 68]
    assert crop_positions(20, 32, 3) == [0, 0, 0]  # no room: every crop starts at 0


def test_grid_crops_are_native_pixels():
    image = coordinate_image(100, 120)
    crops = native_crops(image, 32, crops_per_side=2)
    assert crops.shape == (4, 3, 32, 32) and crops.dtype == np.float32
    # top-left, top-right, bottom-left, bottom-right; values unscaled back to the coordinates
    starts = [(int(c[0, 0, 0] * 255 + 0.5), int(c[1, 0, 0] * 255 + 0.5)) for c in crops]
    assert starts == [(0, 0), (0, 88), (68, 0), (68, 88)]
    np.testing.assert_array_equal(np.round(crops[3] * 255).astype(np.uint8), image[68:100, 88:120].transpose(2, 0, 1))


def test_small_images_are_tiled_not_resized():
    image = random_image(20, 12, seed=4)
    array = np.asarray(image)
    crop = native_crops(array, 32)[0]
    np.testing.assert_array_equal(np.round(crop * 255).astype(np.uint8),
                                  np.tile(array, (3, 2, 1))[:32, :32].transpose(2, 0, 1))


def test_odd_small_images_are_cut_to_an_even_size_before_tiling():
    """Every tile starts at an even offset, so the tiled crop keeps the 2x2 grid."""
    array = np.asarray(random_image(15, 11, seed=5))
    crop = native_crops(array, 32)[0]
    np.testing.assert_array_equal(np.round(crop * 255).astype(np.uint8),
                                  np.tile(array[:10, :14], (4, 3, 1))[:32, :32].transpose(2, 0, 1))


def test_random_crops_stay_on_the_pixel_grid():
    image = coordinate_image(90, 77)
    rng = random.Random(0)
    seen = set()
    for _ in range(50):
        crop = native_crops(image, 16, crops_per_side=3, rng=rng)
        assert crop.shape == (1, 3, 16, 16)
        top, left = int(crop[0, 0, 0, 0] * 255 + 0.5), int(crop[0, 1, 0, 0] * 255 + 0.5)
        assert top % 2 == 0 and left % 2 == 0 and top + 16 <= 90 and left + 16 <= 77
        seen.add((top, left))
    assert len(seen) > 10


@pytest.fixture
def processor():
    semantic = image_processor_for_backbone(MobileNetV2Config(), size={"shortest_edge": 32},
                                            crop_size={"height": 32, "width": 32})
    return DualSightImageProcessor(semantic, artifact_crop_size=16, artifact_crops_per_side=2)


def test_processor_makes_both_views(processor):
    images = [random_image(60, 40, seed=1), random_image(10, 10, seed=2)]
    batch = processor(images, return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["artifact_values"].shape == (2, 4, 3, 16, 16)
    torch.testing.assert_close(batch["pixel_values"], processor.semantic(images, return_tensors="pt")["pixel_values"])
    assert 0 <= batch["artifact_values"].min() and batch["artifact_values"].max() <= 1
    training = processor(images, return_tensors="pt", artifact_rng=random.Random(0))
    assert training["artifact_values"].shape == (2, 1, 3, 16, 16)
    # arrays, batch arrays and PIL images give the same crops
    from_array = processor(np.asarray(images[0]), return_tensors="pt")
    torch.testing.assert_close(from_array["artifact_values"][0], batch["artifact_values"][0])
    same_size = [random_image(40, 40, seed=s) for s in (3, 4)]
    from_batch = processor(np.stack([np.asarray(i) for i in same_size]), return_tensors="pt")
    torch.testing.assert_close(from_batch["artifact_values"], processor(same_size, return_tensors="pt")["artifact_values"])
    # a separate artifact view (training) changes the crops only
    other = processor(images, return_tensors="pt", artifact_images=[random_image(60, 40, seed=9), images[1]])
    torch.testing.assert_close(other["pixel_values"], batch["pixel_values"])
    assert not torch.equal(other["artifact_values"][0], batch["artifact_values"][0])
    torch.testing.assert_close(other["artifact_values"][1], batch["artifact_values"][1])


def test_processor_round_trip_through_auto_image_processor(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    assert type(loaded) is DualSightImageProcessor
    assert (loaded.artifact_crop_size, loaded.artifact_crops_per_side) == (16, 2)
    assert type(loaded.semantic).__name__ == "MobileNetV2ImageProcessorPil"
    image = random_image(50, 70, seed=3)
    for key in ("pixel_values", "artifact_values"):
        torch.testing.assert_close(loaded(image, return_tensors="pt")[key], processor(image, return_tensors="pt")[key])


def test_image_processor_for_model_follows_the_config():
    plain = DualSightConfig(backbone_config=MobileNetV2Config())
    assert type(image_processor_for_model(plain)).__name__ == "MobileNetV2ImageProcessorPil"
    config = DualSightConfig(backbone_config=MobileNetV2Config(), artifact_stream={"crop_size": 32, "crops_per_side": 1})
    processor = image_processor_for_model(config)
    assert isinstance(processor, DualSightImageProcessor)
    assert processor(Image.new("RGB", (300, 200)), return_tensors="pt")["artifact_values"].shape == (1, 1, 3, 32, 32)
