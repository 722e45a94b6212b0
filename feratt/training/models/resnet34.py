"""A ResNet34 encoder whose state_dict keys match torchvision's, and a loader for local weights.

torchvision is not needed: the module names (conv1, bn1, layer1..layer4, each block's conv1, bn1,
conv2, bn2, downsample.0/1) are torchvision's, so a torchvision `resnet34().state_dict()` saved to a
file loads here minus its `fc.*` keys. Nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from feratt.errors import FerattError
from feratt.training.models.blocks import check_width, scaled

#: Blocks per stage of ResNet34.
RESNET34_DEPTHS: tuple[int, int, int, int] = (3, 4, 6, 3)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN plus a (downsampled) identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """ReLU of the residual branch plus the identity."""
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet34Encoder(nn.Module):
    """ResNet34 without its head: conv1 7x7/2, bn1, ReLU, a 2x2 max-pool, then layer1..layer4.

    The 2x2 max-pool (the authors' choice) replaces torchvision's 3x3 one; it has no weights, so the
    keys are unchanged. `forward` returns every stage's output, for the decoder's skips: strides
    4 (after the pool), 4, 8, 16 and 32, with 64, 64, 128, 256, 512 channels times `width`.
    """

    def __init__(self, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        width = check_width(width)
        widths = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2, 2)
        stages: list[nn.Module] = []
        current = widths[0]
        for index, (depth, out) in enumerate(zip(RESNET34_DEPTHS, widths, strict=True)):
            blocks: list[nn.Module] = []
            for block in range(depth):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(current, out, stride))
                current = out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels: tuple[int, ...] = (widths[0], *widths)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's initialisation: Kaiming-normal (fan-out) convolutions, BN weight 1, bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        """The stem's and each stage's output, shallowest first."""
        stem = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out1 = self.layer1(stem)
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        return [stem, out1, out2, out3, out4]


def _find_encoder(module: nn.Module) -> ResNet34Encoder:
    """`module` itself when it is a ResNet34Encoder, else its first such submodule."""
    if isinstance(module, ResNet34Encoder):
        return module
    for child in module.modules():
        if isinstance(child, ResNet34Encoder):
            return child
    raise FerattError(f"{type(module).__name__} holds no ResNet34 encoder to load weights into")


def _read_state_dict(path: Path) -> Mapping[str, Tensor]:
    """The tensors of the state_dict (or {"state_dict": ...} checkpoint) in `path`, safely unpickled."""
    if not path.is_file():
        raise FerattError(f"ResNet34 weights file {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise FerattError(
            f"{path} is not a torch state_dict ({type(exc).__name__}); give a torchvision resnet34 "
            "state_dict saved with torch.save"
        ) from None
    if isinstance(data, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items()
    ):
        raise FerattError(f"{path} holds a {type(data).__name__}, not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


def load_resnet34_weights(module: nn.Module, path: str | Path) -> list[str]:
    """Load a local torchvision resnet34 state_dict into `module`'s ResNet34 encoder.

    `module` is a ResNet34Encoder or any module holding one. The file's `fc.*` keys are dropped.
    Returns one line per key that did not match, "missing: KEY" or "unexpected: KEY" (empty when
    every weight loaded). A file that is not a state_dict, holds no ResNet34 keys, or whose shapes
    differ (e.g. a model width other than 1.0) raises FerattError.
    """
    path = Path(path)
    encoder = _find_encoder(module)
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    own = encoder.state_dict()
    shared = [k for k in state if k in own]
    if not shared:
        raise FerattError(f"{path} holds no ResNet34 weights (no conv1, bn1, layer1..layer4 keys)")
    for key in shared:
        if state[key].shape != own[key].shape:
            raise FerattError(
                f"{path}: {key} has shape {tuple(state[key].shape)} but the encoder expects "
                f"{tuple(own[key].shape)} (torchvision resnet34 weights need model width 1.0)"
            )
    result = encoder.load_state_dict(state, strict=False)
    return [f"missing: {k}" for k in result.missing_keys] + [
        f"unexpected: {k}" for k in result.unexpected_keys
    ]
