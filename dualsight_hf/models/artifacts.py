"""The artifact stream: fixed pixel-residual filters (NPR, SRM) and a small CNN over native-resolution crops.

Semantic backbones see resized images, where the traces that generators leave in neighbouring pixels are gone. This
stream sees crops at the image's own resolution, turns them into residuals that remove content and keep those traces,
and pools a small CNN's feature map into one vector per crop.

- NPR (Tan et al., "Rethinking the Up-Sampling Operations in CNN-based Generative Network for Generalizable Deepfake
  Detection", CVPR 2024): `x - up(down(x))` with nearest-neighbour resampling by a factor of 2, i.e. each pixel minus
  the top-left pixel of its 2x2 cell.
- SRM (Fridrich & Kodovsky 2012; the three-filter bank of Zhou et al., CVPR 2018, used by many detectors): fixed
  high-pass kernels applied to each colour channel.
"""

import torch
from torch import nn

from .configuration import ARTIFACT_STREAM_DEFAULTS

ARTIFACT_RESIDUALS = ("npr", "srm")

# The three SRM kernels of Zhou et al. (2018), 5x5, each normalised by its own centre weight's scale.
SRM_KERNELS = torch.tensor(
    [
        [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]],
        [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
        [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    ],
    dtype=torch.float32,
) / torch.tensor([4.0, 12.0, 2.0])[:, None, None]


def npr_residual(images: torch.Tensor) -> torch.Tensor:
    """
    Neighbouring-pixel residual: `images - up(down(images))`, nearest-neighbour, factor 2.

    Args:
        images (`torch.Tensor` of shape `(batch, channels, height, width)`): height and width even.

    Returns:
        `torch.Tensor` of the same shape; zero at the top-left pixel of every 2x2 cell.
    """
    if images.shape[-1] % 2 or images.shape[-2] % 2:
        raise ValueError(f"npr_residual needs an even height and width, got {tuple(images.shape[-2:])}")
    down = images[..., ::2, ::2]
    return images - down.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


class ResidualFilters(nn.Module):
    """
    Fixed (not trained) residual representations of an image, concatenated on the channel axis.

    Args:
        residuals (`list[str]`, *optional*, defaults to `["npr", "srm"]`): which residuals, in order: `"npr"` (3
            channels) and `"srm"` (the 3 SRM kernels on each of the 3 colour channels: 9 channels, zero padding).

    Example:

    ```python
    >>> import torch
    >>> from dualsight_hf.models.artifacts import ResidualFilters
    >>> ResidualFilters(["npr", "srm"])(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 12, 32, 32])
    ```
    """

    def __init__(self, residuals=ARTIFACT_RESIDUALS):
        super().__init__()
        unknown = set(residuals) - set(ARTIFACT_RESIDUALS)
        if unknown or not residuals:
            raise ValueError(f"residuals must be a non-empty list of {ARTIFACT_RESIDUALS}, got {list(residuals)}")
        self.residuals = list(residuals)

    @property
    def out_channels(self) -> int:
        """`int`: channels of the output."""
        return sum(3 if name == "npr" else 9 for name in self.residuals)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        parts = []
        for name in self.residuals:
            if name == "npr":
                parts.append(npr_residual(images))
            else:
                # one kernel per (colour channel, SRM filter): a grouped convolution, output channel 3 * c + k; a
                # constant, not a buffer, so that no checkpoint can change it
                weight = SRM_KERNELS.repeat(3, 1, 1)[:, None].to(device=images.device, dtype=images.dtype)
                parts.append(nn.functional.conv2d(images, weight, padding=2, groups=3))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class ArtifactEncoder(nn.Module):
    """
    Residual filters (always in float32), then a small CNN kept at full resolution in its first stage (pixel traces
    are local), then global average pooling: one feature vector per crop.

    Each stage is `(Conv3x3 -> BatchNorm -> ReLU) x 2`; stages after the first start with a stride-2 convolution.

    Args:
        residuals (`list[str]`, *optional*, defaults to `["npr", "srm"]`): see [`ResidualFilters`].
        channels (`list[int]`, *optional*, defaults to `[16, 32, 64, 128]`): width of each stage; the last one is the
            feature size.

    Example:

    ```python
    >>> import torch
    >>> from dualsight_hf.models.artifacts import ArtifactEncoder
    >>> ArtifactEncoder(channels=[16, 32])(torch.rand(4, 3, 64, 64)).shape
    torch.Size([4, 32])
    ```
    """

    def __init__(self, residuals=ARTIFACT_RESIDUALS, channels=tuple(ARTIFACT_STREAM_DEFAULTS["channels"])):
        super().__init__()
        self.filters = ResidualFilters(residuals)
        layers, width = [], self.filters.out_channels
        for index, out in enumerate(channels):
            stride = 1 if index == 0 else 2
            layers += [nn.Conv2d(width, out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True), nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            width = out
        self.layers = nn.Sequential(*layers)
        self.feature_size = width

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        # The residuals are differences of one or two grey levels (1/255); bfloat16 (8 significant bits) would move
        # bright pixels by up to half a grey level and distort them, so they are computed in float32, outside any
        # autocast.
        with torch.autocast(crops.device.type, enabled=False):
            residuals = self.filters(crops.float())
        return self.layers(residuals.to(self.layers[0].weight.dtype)).mean(dim=(2, 3))


__all__ = ["ArtifactEncoder", "ResidualFilters", "npr_residual", "SRM_KERNELS"]
