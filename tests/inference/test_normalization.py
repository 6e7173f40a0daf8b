"""Image processors fitted to backbones, and the rescale / normalise steps taken out of them for batched work."""

import pytest
import torch
from conftest import TINY_BACKBONES, random_image, tiny_config

from dualsight_hf import image_processor_for_backbone
from dualsight_hf.inference.normalization import PixelNormalization
from dualsight_hf.models.image_processing import image_processor_for_model


def processors():
    for name, backbone in TINY_BACKBONES.items():
        yield name, image_processor_for_backbone(backbone())
    yield "dualsight", image_processor_for_model(tiny_config("mobilenet_v2", artifact_stream={"crop_size": 32}))


@pytest.mark.parametrize("name,processor", list(processors()), ids=[name for name, _ in processors()])
def test_deferred_normalization_equals_the_processor(name, processor):
    """Resize and crop in the processor (uint8), rescale and normalise per batch afterwards: the same pixel values
    as the processor's own output, and every other input untouched."""
    images = [random_image(97, 61, seed=1), random_image(40, 300, seed=2), random_image(512, 512, seed=3)]
    normalization, deferred = PixelNormalization.split(processor)
    assert normalization is not None and deferred == {"do_rescale": False, "do_normalize": False}
    reference = processor(images, return_tensors="pt")
    split = processor(images, return_tensors="pt", **deferred)
    assert split["pixel_values"].dtype == torch.uint8
    assert set(split) == set(reference)
    torch.testing.assert_close(normalization(split["pixel_values"]), reference["pixel_values"], atol=1e-6, rtol=0)
    for key in set(reference) - {"pixel_values"}:
        torch.testing.assert_close(split[key], reference[key], atol=0, rtol=0)


def test_processors_that_pad_after_normalising_keep_their_own_steps():
    processor = image_processor_for_backbone(TINY_BACKBONES["mobilenet_v2"]())
    processor.do_pad = True  # padding would fill with 0 in normalised space, not in pixel space
    assert PixelNormalization.split(processor) == (None, {})
    processor.do_pad, processor.do_rescale, processor.do_normalize = False, False, False
    assert PixelNormalization.split(processor) == (None, {})
