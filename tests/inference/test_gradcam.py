"""Grad-CAM of the authenticity decision: a map in [0, 1] on the backbone's grid for every backbone family, equal to
the closed form where there is one, with a frozen backbone too; the overlay keeps the image's size."""

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONES, random_image, tiny_config

from dualsight_hf import DualSightForImageClassification
from dualsight_hf.inference.gradcam import grad_cam, overlay


@pytest.mark.parametrize("backbone", sorted(TINY_BACKBONES))
def test_grad_cam_shape_and_range(backbone):
    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config(backbone)).eval()
    cam = grad_cam(model, {"pixel_values": torch.randn(1, 3, 32, 32)}, target_class=1)
    assert cam.ndim == 2 and cam.shape[0] == cam.shape[1] and cam.shape[0] >= 1
    assert cam.min() >= 0 and cam.max() <= 1 and np.isfinite(cam).all()


def test_grad_cam_equals_the_hand_computed_map():
    """With a linear head on average-pooled features, the gradient of the class logit is w_c / (h * w) for every
    position of channel c, so Grad-CAM is relu(sum_c w_c A_c), normalised."""
    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config("resnet")).eval()
    pixels = torch.randn(1, 3, 64, 64)
    cam = grad_cam(model, {"pixel_values": pixels}, target_class=1)
    with torch.no_grad():
        features = model.dualsight.backbone(pixels).last_hidden_state[0]
    expected = torch.relu((model.classifier.weight[1].detach()[:, None, None] * features).sum(0))
    np.testing.assert_allclose(cam, (expected / expected.max()).numpy(), atol=1e-5)


def test_grad_cam_works_with_a_frozen_backbone():
    model = DualSightForImageClassification(tiny_config("resnet", freeze_backbone=True)).eval()
    cam = grad_cam(model, {"pixel_values": torch.randn(1, 3, 32, 32)}, target_class=0)
    assert cam.shape[0] >= 1 and np.isfinite(cam).all()


def test_overlay_keeps_the_size():
    image = random_image(50, 30)
    blended = overlay(image, np.random.default_rng(0).random((4, 4)))
    assert blended.size == (50, 30) and blended.mode == "RGB"
