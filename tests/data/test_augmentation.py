"""Training augmentations, the on-the-fly transform and the collate function."""

import random

import numpy as np
import pytest
from conftest import random_image, tiny_config
from PIL import Image

from dualsight_hf.data.augmentation import (
    AugmentationSettings,
    ImageTransform,
    augment,
    collate,
    down_up_scale,
    jpeg_recompress,
    random_resized_crop,
)
from dualsight_hf.data.sources import encode_labels, load_examples
from dualsight_hf.models.image_processing import image_processor_for_backbone, image_processor_for_model


@pytest.mark.parametrize("name, function", [
    ("crop", lambda im, rng: random_resized_crop(im, rng, (0.3, 0.6))),
    ("jpeg", lambda im, rng: jpeg_recompress(im, 30)),
    ("down_up", lambda im, rng: down_up_scale(im, 0.25)),
    ("all", lambda im, rng: augment(im, AugmentationSettings(flip_p=1, rotation_p=1, color_jitter_p=1, jpeg_p=1,
                                                             blur_p=1, rescale_p=1), rng)),
])
def test_augmentations_give_valid_rgb_images(name, function):
    image = random_image(64, 48, seed=3)
    out = function(image, random.Random(0))
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    if name in ("jpeg", "down_up", "all"):
        assert out.size == image.size or name == "all"
        assert list(out.getdata()) != list(image.getdata())
    if name == "crop":
        assert out.size[0] <= 64 and out.size[1] <= 48 and out.size != image.size


def test_train_transform_output_size_and_collate(class_folder):
    table = encode_labels(load_examples(str(class_folder)), tiny_config(with_objects=False))
    processor = image_processor_for_backbone(tiny_config().backbone_config)
    table.set_transform(ImageTransform(processor, AugmentationSettings(jpeg_p=1, blur_p=1, rescale_p=1), seed=0))
    batch = collate([table[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, 224, 224)
    assert batch["labels"].tolist() == table.with_format(None)["label"][:3]


def test_artifact_view_augmentation_never_resamples_unless_rescaling():
    """With rescaling and JPEG off, the artifact view is the image or its mirror, pixel for pixel, even when the
    semantic view's rotation and blur are certain."""
    from dualsight_hf.data.augmentation import augment_keeping_traces

    image = random_image(31, 20, seed=8)
    settings = AugmentationSettings(rotation_p=1, blur_p=1, jpeg_p=0, rescale_p=0, color_jitter_p=1)
    rng = random.Random(0)
    for _ in range(10):
        out = np.asarray(augment_keeping_traces(image, settings, rng))
        assert np.array_equal(out, np.asarray(image)) or np.array_equal(out, np.asarray(image)[:, ::-1])
    assert not np.array_equal(np.asarray(augment_keeping_traces(image, AugmentationSettings(jpeg_p=1), rng)),
                              np.asarray(image))


def test_transform_with_an_artifact_stream_takes_one_random_crop_in_training(class_folder):
    config = tiny_config(with_objects=False, artifact_stream={"crop_size": 16, "crops_per_side": 2})
    table = encode_labels(load_examples(str(class_folder)), config)
    processor = image_processor_for_model(config)
    table.set_transform(ImageTransform(processor, AugmentationSettings(), seed=0))
    batch = collate([table[i] for i in range(3)])
    assert batch["artifact_values"].shape == (3, 1, 3, 16, 16) and batch["pixel_values"].shape[0] == 3
    table.set_transform(ImageTransform(processor))
    batch = collate([table[i] for i in range(3)])
    assert batch["artifact_values"].shape == (3, 4, 3, 16, 16)
