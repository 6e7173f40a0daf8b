"""A tiny image autoencoder for "aligned" training pairs: a real photo passed through it keeps its content and gains a
decoder's up-sampling fingerprint, so that a detector trained on real vs reconstructed learns the fingerprint and not
the content (Rajan et al., ICLR 2025; DDA, NeurIPS 2025; B-Free, CVPR 2025).

The layout is TAESD's (madebyollin/taesd, MIT), with the FLUX.2 weights of that repository ("TAEF2", about 1.3 M
parameters per half, float16 state dicts); the project keeps them in `../shared/weights/taef2-flux2-tiny-autoencoder`,
whose `PROVENANCE.md` describes the layers this module builds.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

#: the two state dicts of a TAESD-layout folder
ENCODER_FILE, DECODER_FILE = "taef2_encoder.pth", "taef2_decoder.pth"
#: the latent is 1/8 of the image's side: sizes that are multiples of this round-trip exactly in shape
SCALE = 8


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    """`relu(conv(relu(conv(relu(conv(x))))) + x)`, after `x + pool(x)` where the block has a pool (the three next
    to the latent)."""

    def __init__(self, channels: int = 64, pool: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.pool = nn.Sequential(nn.Conv2d(channels, 4 * channels, 1, bias=False), nn.GroupNorm(4, 4 * channels),
                                  nn.ReLU(), nn.Conv2d(4 * channels, channels, 1, bias=False)) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + x)


def _down() -> nn.Conv2d:
    return _conv(64, 64, stride=2, bias=False)


def _up() -> list[nn.Module]:
    return [nn.Upsample(scale_factor=2), _conv(64, 64, bias=False)]


class TinyAutoencoder(nn.Module):
    """
    TAESD's encoder (RGB in [0, 1] to a 32-channel latent at 1/8 of the side) and decoder.

    Example:

    ```python
    >>> from PIL import Image
    >>> from dualsight_hf.data.autoencoder import TinyAutoencoder
    >>> autoencoder = TinyAutoencoder.from_folder("../shared/weights/taef2-flux2-tiny-autoencoder")
    >>> autoencoder.reconstruct(Image.open("examples/real/chelsea.png"), size=224).size
    (224, 224)
    ```
    """

    def __init__(self, latent_channels: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            _conv(3, 64), _Block(), _down(), *(_Block() for _ in range(3)), _down(), *(_Block() for _ in range(3)),
            _down(), *(_Block(pool=True) for _ in range(3)), _conv(64, latent_channels))
        self.decoder = nn.Sequential(
            _Clamp(), _conv(latent_channels, 64), nn.ReLU(), *(_Block(pool=True) for _ in range(3)),
            *_up(), *(_Block() for _ in range(3)), *_up(), *(_Block() for _ in range(3)), *_up(), _Block(),
            _conv(64, 3))

    @classmethod
    def from_folder(cls, folder) -> "TinyAutoencoder":
        """The autoencoder with the two state dicts of `folder` (`ENCODER_FILE`, `DECODER_FILE`), loaded with strict
        key matching, in float32 and eval mode."""
        model = cls()
        for half, name in ((model.encoder, ENCODER_FILE), (model.decoder, DECODER_FILE)):
            path = Path(folder) / name
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file (a TAESD-layout folder holds {ENCODER_FILE} and "
                                        f"{DECODER_FILE})")
            half.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return model.float().eval()

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Round trip of `pixels` (`(batch, 3, height, width)` in [0, 1], sides multiples of `SCALE`), clamped to
        [0, 1]."""
        return self.decoder(self.encoder(pixels)).clamp(0, 1)

    def reconstruct(self, image: Image.Image, size: int | None = None) -> Image.Image:
        """
        `image` passed through the autoencoder, as an 8-bit RGB image.

        Args:
            image (`PIL.Image.Image`): any mode; converted to RGB.
            size (`int`, *optional*): first resize the shortest side to `size` (bicubic) and take the centre
                `size` x `size` crop, as CLIP's processor does, so that the model sees the decoder's pixels unresized;
                else the image is only cropped to multiples of `SCALE`.
        """
        if size is not None and size % SCALE:
            raise ValueError(f"size must be a multiple of {SCALE} (the latent's scale), got {size}")
        image = image.convert("RGB")
        if size is not None:
            scale = size / min(image.size)
            image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                                 Image.BICUBIC)
            width = height = size
        else:
            width, height = image.width // SCALE * SCALE, image.height // SCALE * SCALE
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image = image.crop((left, top, left + width, top + height))
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
        round_trip = self(pixels)[0].permute(1, 2, 0).numpy()
        return Image.fromarray((round_trip * 255).round().astype(np.uint8))
