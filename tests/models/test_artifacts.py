"""The artifact stream's fixed residuals (checked by hand on tiny images) and its CNN."""

import pytest
import torch

from dualsight_hf.models.artifacts import SRM_KERNELS, ArtifactEncoder, ResidualFilters, npr_residual


def test_npr_residual_by_hand():
    image = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]])[None, None]
    # down (nearest, factor 2) keeps [[1, 3]]; up repeats each as a 2x2 cell: [[1, 1, 3, 3], [1, 1, 3, 3]]
    expected = torch.tensor([[0.0, 1, 0, 1], [4, 5, 4, 5]])[None, None]
    torch.testing.assert_close(npr_residual(image), expected)


def test_npr_residual_is_zero_on_an_image_upsampled_by_two():
    """What the residual detects: an image made by nearest-neighbour upsampling has none."""
    small = torch.rand(1, 3, 4, 4)
    upsampled = small.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    assert npr_residual(upsampled).abs().max() == 0
    assert npr_residual(torch.rand(1, 3, 8, 8)).abs().max() > 0


def test_npr_residual_needs_even_sides():
    with pytest.raises(ValueError, match="even height and width"):
        npr_residual(torch.zeros(1, 3, 5, 4))


def test_srm_kernels_by_hand():
    assert SRM_KERNELS.shape == (3, 5, 5)
    torch.testing.assert_close(SRM_KERNELS[2, 2], torch.tensor([0.0, 0.5, -1.0, 0.5, 0.0]))
    assert SRM_KERNELS[0, 2, 2] == -1.0 and SRM_KERNELS[1, 2, 2] == -1.0
    # high-pass: every kernel sums to zero
    torch.testing.assert_close(SRM_KERNELS.sum(dim=(1, 2)), torch.zeros(3))


def test_srm_filters_on_a_delta_give_the_kernels_of_that_channel():
    image = torch.zeros(1, 3, 5, 5)
    image[0, 1, 2, 2] = 1.0  # a single bright green pixel
    out = ResidualFilters(["srm"])(image)[0]
    assert out.shape == (9, 5, 5)
    # output channel 3 * colour + kernel; the kernels are symmetric, so the response to a delta is the kernel
    torch.testing.assert_close(out[3:6], SRM_KERNELS)
    assert out[:3].abs().max() == 0 and out[6:].abs().max() == 0


def test_srm_filters_by_hand_on_a_quadratic_ramp():
    """The third kernel is half the horizontal second difference: on x = column^2 it is (c-1)^2 - 2c^2 + (c+1)^2 = 2,
    halved: 1; on a linear ramp every kernel gives 0 away from the border."""
    columns = torch.arange(9.0)
    quadratic = (columns ** 2).expand(9, 9)[None, None].expand(1, 3, 9, 9)
    out = ResidualFilters(["srm"])(quadratic)[0]
    torch.testing.assert_close(out[2, 2:-2, 2:-2], torch.ones(5, 5))
    linear = (columns * 3 + 1).expand(9, 9)[None, None].expand(1, 3, 9, 9)
    # float32 rounding of values up to 25 (the kernels' sums differ by CPU: 1.3e-5 on an AMD EPYC without AVX512);
    # a wrong kernel gives errors of order 1
    assert ResidualFilters(["srm"])(linear)[0, :, 2:-2, 2:-2].abs().max() < 1e-4


def test_residual_filters_concatenate_in_order():
    images = torch.rand(2, 3, 8, 8)
    filters = ResidualFilters(["npr", "srm"])
    out = filters(images)
    assert filters.out_channels == 12 and out.shape == (2, 12, 8, 8)
    torch.testing.assert_close(out[:, :3], npr_residual(images))
    torch.testing.assert_close(out[:, 3:], ResidualFilters(["srm"])(images))
    with pytest.raises(ValueError, match="residuals"):
        ResidualFilters(["fft"])


def test_artifact_encoder_pools_any_crop_size_and_trains():
    encoder = ArtifactEncoder(channels=[4, 8])
    assert encoder.feature_size == 8
    for side in (16, 64):
        assert encoder(torch.rand(3, 3, side, side)).shape == (3, 8)
    encoder(torch.rand(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_residuals_survive_bfloat16_autocast():
    """Bright pixels rounded to bfloat16 move by up to half a grey level (k/255 lands on a 1/256 grid), which distorts
    residuals of one or two grey levels; under autocast the encoder still computes them from the float32 pixels,
    exactly."""
    torch.manual_seed(0)
    crops = (200 + torch.randint(0, 3, (2, 3, 16, 16)).float()) / 255  # bright, with 1-2 grey-level texture
    exact = ResidualFilters()(crops)[..., 2:-2, 2:-2]
    rounded = ResidualFilters()(crops.bfloat16().float())[..., 2:-2, 2:-2]
    assert (rounded - exact).norm() / exact.norm() > 0.002
    encoder = ArtifactEncoder(channels=[4, 8]).eval()
    seen = []
    encoder.filters.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reduced = encoder(crops)
    assert seen[0].dtype == torch.float32
    torch.testing.assert_close(seen[0][..., 2:-2, 2:-2], exact, atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(reduced.float(), encoder(crops), atol=0.05, rtol=0.05)
