"""FERAtt (paper section 3.1, figure 2): attention G_att, features G_ft, reconstruction G_rec, and G_rep.

Defaults follow the paper, and the authors' paper-time code where the paper is silent; the authors'
later choices are options (`attention_channels`, `ft_blocks=8`, `rec_concat`, `teacher_forcing`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from feratt.config.methods import FERATT_MULTIPLE
from feratt.errors import FerattError
from feratt.training.models.blocks import (
    REP_SIZE,
    ConvReLU,
    DecoderBlock,
    ModelOutput,
    Normalize,
    ResidualBlock,
    check_in_size,
    check_width,
    pool_to,
    scaled,
)
from feratt.training.models.preact_resnet import preact_resnet18
from feratt.training.models.registry import register_model
from feratt.training.models.resnet34 import ResNet34Encoder, load_resnet34_weights


class AttentionUNet(nn.Module):
    """G_att: a U-Net-like encoder-decoder on a ResNet34 encoder, giving raw attention logits.

    Encoder: ResNet34 (conv1 7x7/2, bn1, ReLU, 2x2 max-pool, layer1..layer4), then a further 2x2
    max-pool to the centre. Decoder: blocks of (skip concatenation, bilinear x2, two 3x3 conv + ReLU)
    with base width 32: centre, dec5 and dec4 give 256 channels, dec3 64, dec2 128, dec1 32 (all times
    `width`). Head: 3x3 conv + ReLU, 1x1 conv to `attention_channels`. No dilation. The output has the
    input's resolution; the input side must be a multiple of 64 (`FERATT_MULTIPLE`).
    """

    def __init__(self, attention_channels: int = 1, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        self.encoder = ResNet34Encoder(width=width, in_channels=in_channels)
        _, c1, c2, c3, c4 = self.encoder.channels
        nf = scaled(32, width)
        self.pool = nn.MaxPool2d(2, 2)
        self.center = DecoderBlock(c4, nf * 16, nf * 8)
        self.dec5 = DecoderBlock(c4 + nf * 8, nf * 16, nf * 8)
        self.dec4 = DecoderBlock(c3 + nf * 8, nf * 16, nf * 8)
        self.dec3 = DecoderBlock(c2 + nf * 8, nf * 8, nf * 2)
        self.dec2 = DecoderBlock(c1 + nf * 2, nf * 4, nf * 4)
        self.dec1 = DecoderBlock(nf * 4, nf * 4, nf)
        self.head = nn.Sequential(ConvReLU(nf, nf), nn.Conv2d(nf, attention_channels, 1))
        self.out_channels = attention_channels

    def forward(self, x: Tensor) -> Tensor:
        """(B, attention_channels, H, W) attention logits for a (B, 3, H, W) image."""
        _, e1, e2, e3, e4 = self.encoder(x)
        center = self.center(self.pool(e4))
        d5 = self.dec5(center, e4)
        d4 = self.dec4(d5, e3)
        d3 = self.dec3(d4, e2)
        d2 = self.dec2(d3, e1)
        return self.head(self.dec1(d2))


def copy_rgb(conv: nn.Conv2d) -> None:
    """Set `conv`'s first three filters to copy input channels 0, 1, 2 (centre tap 1, no bias)."""
    if conv.in_channels < 3 or conv.out_channels < 3:
        raise FerattError(f"an identity start needs at least 3 channels, not {conv.in_channels}")
    centre_y, centre_x = (k // 2 for k in conv.kernel_size)
    conv.weight[:3].zero_()
    for channel in range(3):
        conv.weight[channel, channel, centre_y, centre_x] = 1.0
    if conv.bias is not None:
        conv.bias[:3].zero_()


class FeatureExtractor(nn.Module):
    """G_ft: 9x9 conv, `blocks` residual blocks, 3x3 conv, plus a global skip from the first conv.

    No pooling and no stride, so the features keep the input's resolution.
    """

    def __init__(self, blocks: int = 4, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        channels = scaled(32, width)
        self.conv_input = nn.Conv2d(in_channels, channels, 9, padding=4)
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.conv_mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.out_channels = channels

    @torch.no_grad()
    def start_as_identity(self) -> None:
        """Make the first three output channels the input's RGB, and the residual branch add nothing."""
        copy_rgb(self.conv_input)
        self.conv_mid.weight.zero_()
        self.conv_mid.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """(B, out_channels, H, W) features."""
        first = self.conv_input(x)
        return first + self.conv_mid(self.blocks(first))


class Reconstruction(nn.Module):
    """G_rec: gate G_ft by sigmoid(G_att), then convolutions to the 3-channel attention image I_att.

    The gate is sigmoid(G_att) broadcast over G_ft's channels; with several attention channels their
    sigmoids are averaged into one gate first. Default (paper: two convolutions and a ReLU): 3x3 conv,
    ReLU, 1x1 conv to 3 channels. With `concat` (the authors' later code): the gated features, the
    input image and the raw G_att are concatenated, then 3x3 conv + ReLU to 32 (x width) channels, 1x1
    conv to 3, BatchNorm, ReLU.
    """

    def __init__(
        self,
        feature_channels: int,
        attention_channels: int = 1,
        concat: bool = False,
        width: float = 1.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.concat = concat
        out_channels = 3
        if concat:
            hidden = scaled(32, width)
            self.layers = nn.Sequential(
                ConvReLU(feature_channels + in_channels + attention_channels, hidden),
                nn.Conv2d(hidden, out_channels, 1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
        else:
            self.layers = nn.Sequential(
                ConvReLU(feature_channels, feature_channels), nn.Conv2d(feature_channels, out_channels, 1)
            )

    @torch.no_grad()
    def start_as_identity(self) -> None:
        """Make the output the gated features' first three channels (the gated RGB, with G_ft's)."""
        if self.concat:
            raise FerattError("identity_init needs the paper's G_rec, not rec_concat's (its BatchNorm)")
        copy_rgb(self.layers[0][0])
        copy_rgb(self.layers[1])

    @staticmethod
    def gate(attention_map: Tensor, features: Tensor) -> Tensor:
        """sigmoid(G_att) * G_ft, the attention channels' sigmoids averaged when there are several."""
        weights = torch.sigmoid(attention_map)
        if weights.shape[1] > 1:
            weights = weights.mean(dim=1, keepdim=True)
        return weights * features

    def forward(self, x: Tensor, attention_map: Tensor, features: Tensor) -> Tensor:
        """The (B, 3, H, W) attention image I_att."""
        gated = self.gate(attention_map, features)
        if self.concat:
            gated = torch.cat([gated, x, attention_map], dim=1)
        return self.layers(gated)


class Representation(nn.Module):
    """G_rep: PreActResNet18 on 32x32, global pool, linear to z (no non-linearity), linear z to logits."""

    def __init__(self, num_classes: int, embedding_dim: int = 64, width: float = 1.0) -> None:
        super().__init__()
        self.trunk = preact_resnet18(width=width, num_classes=0)
        self.embed = nn.Linear(self.trunk.num_features, embedding_dim)
        self.fc = nn.Linear(embedding_dim, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(embedding z (B, embedding_dim), logits (B, num_classes)) for a (B, 3, 32, 32) image."""
        z = self.embed(self.trunk(x))
        return z, self.fc(z)


@register_model("feratt")
class FERAtt(nn.Module):
    """FERAtt: I_att = G_rec(sigmoid(G_att(x)) * G_ft(x)), pooled to 32x32, then classified by G_rep.

    Args:
        num_classes: expression classes.
        in_size: nominal input side (a multiple of 64); forward accepts any multiple of 64.
        width: channel multiplier for every part (1.0 is the paper's network, about 46 M parameters).
        attention_channels: G_att output channels (1 at paper time; the later code used C).
        ft_blocks: residual blocks in G_ft (4 at paper time; the later code used 8).
        rec_concat: the later code's G_rec (concatenate input and G_att; conv, conv, BatchNorm, ReLU).
        teacher_forcing: probability that a training batch feeds `target` to G_rep instead of I_att
            (0.0 by default; 0.2 at paper time). One draw per call from torch's global generator
            (`torch.rand(1)`), made only in training mode when a target is given and p > 0, so seeded
            runs repeat. I_att is computed and returned either way, for the attention loss.
        embedding_dim: size of the representation z.
        attention_weights: path of a local torchvision resnet34 state_dict for G_att's encoder; None
            keeps torchvision's random initialisation. Nothing is downloaded.
        normalize: standardise G_rep's input with fixed CIFAR channel statistics (paper-time code).
        detach_attention: G_rep classifies I_att without gradients flowing back into G_att, G_ft and
            G_rec, which then learn from the attention loss alone.
        identity_init: start G_ft and G_rec as the identity on RGB (PyTorch's default initialisation
            otherwise), so that I_att starts as sigmoid(G_att) times the input and G_rep sees the
            expression from the first step while the attention learns to drop the background.

    `attention_init` records the encoder's initialisation: "random" or "resnet34:<path>".
    """

    outputs: ClassVar[frozenset[str]] = frozenset(
        {"logits", "embedding", "attention_image", "attention_map", "features"}
    )
    input_multiple: ClassVar[int] = FERATT_MULTIPLE

    def __init__(
        self,
        num_classes: int,
        in_size: int = 128,
        width: float = 1.0,
        attention_channels: int = 1,
        ft_blocks: int = 4,
        rec_concat: bool = False,
        teacher_forcing: float = 0.0,
        embedding_dim: int = 64,
        attention_weights: str | Path | None = None,
        normalize: bool = True,
        detach_attention: bool = False,
        identity_init: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise FerattError(f"num_classes must be at least 1, got {num_classes}")
        if attention_channels < 1:
            raise FerattError(f"attention_channels must be at least 1, got {attention_channels}")
        if ft_blocks < 0:
            raise FerattError(f"ft_blocks must be 0 or more, got {ft_blocks}")
        if embedding_dim < 1:
            raise FerattError(f"embedding_dim must be at least 1, got {embedding_dim}")
        if not 0.0 <= teacher_forcing <= 1.0:
            raise FerattError(f"teacher_forcing is a probability in [0, 1], got {teacher_forcing}")
        self.num_classes = num_classes
        self.in_size = check_in_size(in_size, self.input_multiple)
        self.width = check_width(width)
        self.teacher_forcing = float(teacher_forcing)
        self.detach_attention = bool(detach_attention)
        self.embedding_dim = embedding_dim
        self.g_att = AttentionUNet(attention_channels, width=width)
        self.g_ft = FeatureExtractor(ft_blocks, width=width)
        self.g_rec = Reconstruction(
            self.g_ft.out_channels, attention_channels, concat=rec_concat, width=width
        )
        self.norm: nn.Module = Normalize() if normalize else nn.Identity()
        self.g_rep = Representation(num_classes, embedding_dim, width=width)
        self.attention_init = "random"
        if identity_init:
            self.g_ft.start_as_identity()
            self.g_rec.start_as_identity()
        if attention_weights is not None:
            self.load_attention_weights(attention_weights)

    def load_attention_weights(self, path: str | Path) -> list[str]:
        """Load a local torchvision resnet34 state_dict into G_att's encoder; FerattError if incomplete."""
        report = load_resnet34_weights(self.g_att.encoder, path)
        missing = [line.removeprefix("missing: ") for line in report if line.startswith("missing: ")]
        if missing:
            raise FerattError(
                f"{path} is not a complete resnet34 state_dict: {len(missing)} encoder weight(s) "
                f"missing, e.g. {missing[0]}"
            )
        if report:
            warnings.warn(f"{path}: ignored {len(report)} key(s), e.g. {report[0]}", stacklevel=2)
        self.attention_init = f"resnet34:{path}"
        return report

    def rep_input(self, image: Tensor) -> Tensor:
        """G_rep's input: `image` average-pooled to 32x32 (by in_size / 32), then normalised."""
        return self.norm(pool_to(image, REP_SIZE))

    def _force(self, target: Tensor | None) -> bool:
        """Whether this call feeds `target` to G_rep: one torch.rand(1) draw, training mode only."""
        if not self.training or target is None or self.teacher_forcing <= 0.0:
            return False
        return bool(torch.rand(1).item() < self.teacher_forcing)

    def forward(self, x: Tensor, target: Tensor | None = None) -> ModelOutput:
        """Run all four modules on `x` (B, 3, H, W), H and W multiples of 64; `target` as x, for forcing."""
        height, width = x.shape[-2:]
        if height % FERATT_MULTIPLE or width % FERATT_MULTIPLE:
            raise FerattError(
                f"FERAtt input sides must be multiples of {FERATT_MULTIPLE}, got {height}x{width}"
            )
        attention_map = self.g_att(x)
        features = self.g_ft(x)
        attention_image = self.g_rec(x, attention_map, features)
        forced = self._force(target)
        source = target if forced and target is not None else attention_image
        if self.detach_attention:
            source = source.detach()
        embedding, logits = self.g_rep(self.rep_input(source))
        return ModelOutput(
            logits=logits,
            embedding=embedding,
            attention_image=attention_image,
            attention_map=attention_map,
            features=features,
            teacher_forced=forced,
        )
