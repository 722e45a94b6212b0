"""CIFAR-style pre-activation ResNet18 (He et al. 2016), the paper's classifier and baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from feratt.training.models.blocks import (
    REP_SIZE,
    ModelOutput,
    Normalize,
    check_in_size,
    check_width,
    scaled,
)
from feratt.training.models.registry import register_model


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a (projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """The block's output; a projection shortcut reads the pre-activated input."""
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """CIFAR-style PreActResNet: 3x3 stride-1 stem, pre-activation stages, global average pool, linear.

    No BN-ReLU before the pool (as in the authors' code). `num_classes=0` leaves the head out, so the
    forward returns the pooled (B, num_features) vector, timm's convention.
    """

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 2, 2),
        channels: Sequence[int] = (64, 128, 256, 512),
        strides: Sequence[int] = (1, 2, 2, 2),
        width: float = 1.0,
        in_channels: int = 3,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        width = check_width(width)
        widths = [scaled(c, width) for c in channels]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        current = widths[0]
        for depth, out, stride in zip(depths, widths, strides, strict=True):
            blocks: list[nn.Module] = []
            for index in range(depth):
                blocks.append(PreActBlock(current, out, stride if index == 0 else 1))
                current = out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = current
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(current, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's (B, num_features, h, w) feature map."""
        x = self.conv1(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: Tensor) -> Tensor:
        """Global average pool, then the linear head (identity when num_classes is 0)."""
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (or pooled features when num_classes is 0)."""
        return self.forward_head(self.forward_features(x))


def preact_resnet18(width: float = 1.0, num_classes: int = 0, in_channels: int = 3) -> PreActResNet:
    """PreActResNet18: 4 stages of 2 blocks, widths 64/128/256/512 x `width`, strides 1/2/2/2."""
    return PreActResNet((2, 2, 2, 2), width=width, num_classes=num_classes, in_channels=in_channels)


@register_model("baseline")
class Baseline(nn.Module):
    """The paper's baseline: PreActResNet18 on the input resized to 32x32 (area interpolation).

    With `normalize` (the authors' habit), the 32x32 image is standardised with fixed CIFAR channel
    statistics first, exactly as FERAtt's classifier input is. Only `logits` is set in the output.
    """

    outputs: ClassVar[frozenset[str]] = frozenset({"logits"})
    input_multiple: ClassVar[int] = 32  # of in_size; the forward resizes any input to 32x32

    def __init__(
        self, num_classes: int, in_size: int = 128, width: float = 1.0, normalize: bool = True
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_size = check_in_size(in_size, self.input_multiple)
        self.width = check_width(width)
        self.normalize = normalize
        self.norm: nn.Module = Normalize() if normalize else nn.Identity()
        self.net = preact_resnet18(width=width, num_classes=num_classes)

    def rep_input(self, x: Tensor) -> Tensor:
        """The classifier's input: `x` resized to 32x32 by area interpolation, then normalised."""
        if x.shape[-2:] != (REP_SIZE, REP_SIZE):
            x = F.interpolate(x, size=(REP_SIZE, REP_SIZE), mode="area")
        return self.norm(x)

    def forward(self, x: Tensor, target: Tensor | None = None) -> ModelOutput:
        """Classify `x` (B, 3, H, W); `target` is accepted for a uniform call and ignored."""
        del target
        return ModelOutput(logits=self.net(self.rep_input(x)))
