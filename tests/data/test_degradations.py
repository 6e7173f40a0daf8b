import numpy as np
import pytest
from conftest import random_image
from PIL import Image

from dualsight_hf.data.degradations import DEFAULT_LEVELS, degrade, parse_perturbation


@pytest.mark.parametrize("name", sorted(DEFAULT_LEVELS))
def test_every_degradation_at_every_default_level_is_deterministic(name):
    image = random_image(64, 48, seed=1)
    for level in DEFAULT_LEVELS[name]:
        first, second = degrade(image, name, level, seed=3), degrade(image, name, level, seed=3)
        assert first.mode == "RGB" and np.array_equal(np.asarray(first), np.asarray(second))
        assert not np.array_equal(np.asarray(first), np.asarray(image)) or name == "crop"
        expected = (round(64 * level), round(48 * level)) if name in ("crop", "resize") else (64, 48)
        assert first.size == expected


def test_noise_depends_on_the_seed_and_has_the_asked_strength():
    image = Image.new("RGB", (100, 100), (128, 128, 128))
    a, b = degrade(image, "noise", 10, seed=1), degrade(image, "noise", 10, seed=2)
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    assert np.asarray(a, dtype=float).std() == pytest.approx(10, rel=0.05)


def test_stronger_levels_degrade_more():
    image = random_image(128, 128, seed=2)

    def error(name, level):
        return np.abs(np.asarray(degrade(image, name, level), dtype=float) - np.asarray(image, dtype=float)).mean()

    assert error("jpeg", 50) > error("jpeg", 95)
    assert error("downscale", 0.25) > error("downscale", 0.5)
    assert error("blur", 2) > error("blur", 1)


def test_parse_perturbation():
    assert parse_perturbation("jpeg:95,75") == [("jpeg", 95.0), ("jpeg", 75.0)]
    assert parse_perturbation("blur") == [("blur", 1.0), ("blur", 2.0)]
    with pytest.raises(ValueError, match="unknown degradation 'sharpen'"):
        parse_perturbation("sharpen:1")
