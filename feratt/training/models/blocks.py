"""Small building blocks shared by the FERAtt networks and the baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from feratt.errors import FerattError

#: Fixed CIFAR-10 channel statistics the authors' code normalised the classifier's input with.
CIFAR_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)

#: The classifier (PreActResNet18) always sees 32x32 images.
REP_SIZE = 32


def scaled(channels: int, width: float) -> int:
    """`channels` times the width multiplier, rounded, at least 1."""
    return max(1, round(channels * width))


def check_width(width: float) -> float:
    """`width` as a float, or a FerattError when it is not positive."""
    if not width > 0:
        raise FerattError(f"model width must be positive, got {width!r}")
    return float(width)


def check_in_size(in_size: int, multiple: int = 32) -> int:
    """`in_size` when it is a positive multiple of `multiple`, else a FerattError."""
    if int(in_size) != in_size or in_size < multiple or in_size % multiple:
        raise FerattError(f"model input size must be a positive multiple of {multiple}, got {in_size!r}")
    return int(in_size)


class ConvReLU(nn.Sequential):
    """A 3x3 convolution (with bias, 'same' padding) followed by a ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """U-Net decoder block: concatenate the skip, upsample x2 bilinearly, then two 3x3 conv + ReLU."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvReLU(in_channels, mid_channels)
        self.conv2 = ConvReLU(mid_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        """Decode `x` (with `skip` concatenated along channels first) at twice the resolution."""
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv2(self.conv1(x))


class ResidualBlock(nn.Module):
    """EDSR-style residual block: 3x3 conv, LeakyReLU(0.2), 3x3 conv, identity skip; no normalisation."""

    def __init__(self, channels: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """`x` plus the residual branch."""
        return x + self.conv2(self.act(self.conv1(x)))


class Normalize(nn.Module):
    """Fixed per-channel (x - mean) / std; a buffer-only module, nothing to learn."""

    def __init__(self, mean: tuple[float, ...] = CIFAR_MEAN, std: tuple[float, ...] = CIFAR_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """`x` standardised channel by channel."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def pool_to(x: Tensor, size: int = REP_SIZE) -> Tensor:
    """Average-pool `x` to `size` x `size` (a plain k x k average pool when the size divides)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.adaptive_avg_pool2d(x, size)


@dataclass
class ModelOutput:
    """What every model's forward returns; fields a model does not produce are None.

    - logits: (B, C) class scores.
    - embedding: (B, D) the representation z (FERAtt only; D = `embedding_dim`, 64 by default).
    - attention_image: (B, 3, H, W) I_att at the input resolution (FERAtt only).
    - attention_map: (B, Ca, H, W) G_att's raw logits, before the sigmoid (FERAtt only).
    - features: (B, F, H, W) G_ft's output (FERAtt only).
    - teacher_forced: whether this call fed the target image, not I_att, to the classifier.
    """

    logits: Tensor
    embedding: Tensor | None = None
    attention_image: Tensor | None = None
    attention_map: Tensor | None = None
    features: Tensor | None = None
    teacher_forced: bool = False
