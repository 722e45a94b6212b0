"""How good FERAtt's attention is: I_att against its target (MSE, PSNR) and the gate against the face mask.

Every figure is a mean over samples, accumulated as exact sums so that passes split across batches or
ranks give the same numbers. I_att and the target are compared as the attention loss compares them: the
target in [0, 1] RGB at the model's input size, I_att as G_rec gives it (not clipped).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import default_collate

from feratt.artifacts.render import RenderSet
from feratt.artifacts.run import FoldFolder
from feratt.atomic import atomic_write_bytes
from feratt.config.methods import get_method
from feratt.config.training import TrainConfig
from feratt.training.data import ShardStream, normalise_batch, prepare_inputs

#: The keys an epoch record gains for a FERAtt method, in the order of AttentionSums.sums.
ATTENTION_KEYS: tuple[str, ...] = ("att_mse", "att_psnr", "att_iou")
#: The smallest per-sample MSE a PSNR is computed from, so a perfect I_att gives 100 dB, not infinity.
MIN_MSE = 1e-10
#: The fold folder's file of I_att at a few epochs, for a few fixed test samples.
#: How many test samples the strip shows.
STRIP_SAMPLES = 6


def attention_gate(attention_map: Tensor) -> Tensor:
    """The (B, 1, H, W) gate G_rec applies: sigmoid(G_att), the channels' sigmoids averaged when several."""
    return torch.sigmoid(attention_map.float()).mean(dim=1, keepdim=True)


def attention_scores(
    attention_image: Tensor, target: Tensor, attention_map: Tensor, mask: Tensor
) -> dict[str, Tensor]:
    """Per-sample (B,) scores: `att_mse`, `att_psnr` and `att_iou`.

    - att_mse: the mean squared error of I_att against `target` (both in the [0, 1] image range).
    - att_psnr: 10 log10(1 / att_mse) in dB, the peak being 1 (the top of the [0, 1] range); the MSE is
      floored at MIN_MSE.
    - att_iou: intersection over union of the gate > 0.5 and the face mask > 0.5, the mask resized to the
      gate's size by nearest neighbour; a sample with both empty scores 1.
    """
    squared = (attention_image.float() - target.float()).square()
    mse = squared.flatten(1).mean(dim=1)
    psnr = -10.0 * torch.log10(mse.clamp(min=MIN_MSE))
    gate = attention_gate(attention_map) > 0.5
    face = F.interpolate(mask.float(), size=gate.shape[-2:], mode="nearest") > 0.5
    intersection = (gate & face).flatten(1).sum(dim=1).double()
    union = (gate | face).flatten(1).sum(dim=1).double()
    iou = torch.where(union > 0, intersection / union.clamp(min=1.0), torch.ones_like(union))
    return {"att_mse": mse.double(), "att_psnr": psnr.double(), "att_iou": iou}


class AttentionSums:
    """Sums over samples of the attention scores, for one pass; `sums` is what a caller all_reduces."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        # The scores' sums, then the sample count, in float64 so the sums stay exact enough.
        self.sums = torch.zeros(len(ATTENTION_KEYS) + 1, dtype=torch.float64, device=device)

    def update(self, attention_image: Tensor, target: Tensor, attention_map: Tensor, mask: Tensor) -> None:
        """Add one batch's samples."""
        with torch.no_grad():
            scores = attention_scores(attention_image.detach(), target, attention_map.detach(), mask)
            totals = [scores[key].sum() for key in ATTENTION_KEYS]
            count = torch.tensor(
                float(attention_image.shape[0]), dtype=torch.float64, device=self.sums.device
            )
            self.sums += torch.stack([*(t.to(self.sums.device) for t in totals), count])

    def means(self) -> dict[str, float]:
        """The mean of each score over the samples seen (NaN when none)."""
        count = float(self.sums[-1])
        values = self.sums[:-1].tolist()
        return {
            key: v / count if count else float("nan") for key, v in zip(ATTENTION_KEYS, values, strict=True)
        }


def strip_epochs(epochs: int) -> list[int]:
    """The epochs (from 0) whose I_att the strip keeps: the first, a quarter and half way, and the last."""
    return sorted({0, epochs // 4, epochs // 2, epochs - 1}) if epochs > 0 else []


def strip_images(images: Tensor) -> np.ndarray:
    """(N, 3, H, W) images in [0, 1] as (N, H, W, 3) uint8, clipped to the range."""
    scaled = images.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()


def first_samples(
    render: RenderSet, subjects: Sequence[str], config: TrainConfig, device: torch.device, count: int
) -> tuple[Tensor, Tensor]:
    """The model inputs and attention targets of the first `count` samples of `subjects`, in shard order.

    Read in the main process as one rank, so the samples do not depend on workers or ranks.
    """
    stream = ShardStream(render.shards(subjects), buffer_size=0, verify=config.verify, rank=0, world_size=1)
    items = iter(stream)
    try:
        batch = default_collate(list(itertools.islice(items, count)))
    finally:
        items.close()  # type: ignore[attr-defined]
    return prepare_inputs(normalise_batch(batch, device), config)


@dataclass
class AttentionStrip:
    """I_att of a few fixed test samples at the epochs `wanted`, kept in a fold's attention-strip.npz.

    The file holds `inputs` and `targets` (N, H, W, 3) uint8 at the model's input size, `epochs` (K,) and
    `attention` (K, N, H, W, 3) uint8: I_att clipped to [0, 1] after each of those epochs.
    """

    path: Path
    inputs: Tensor
    targets: Tensor
    wanted: list[int]
    epochs: list[int] = field(default_factory=list)
    attention: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        fold_dir: FoldFolder,
        render: RenderSet,
        subjects: Sequence[str],
        config: TrainConfig,
        device: torch.device,
        start: int = 0,
    ) -> AttentionStrip | None:
        """A fold's strip from epoch `start` on (the saved epochs before it kept); None without attention."""
        if not get_method(config.method).attention or not subjects:
            return None
        inputs, targets = first_samples(render, subjects, config, device, STRIP_SAMPLES)
        strip = cls(fold_dir.strip, inputs, targets, strip_epochs(config.epochs))
        if start > 0 and strip.path.is_file():
            with np.load(strip.path) as saved:
                for epoch, images in zip(saved["epochs"].tolist(), saved["attention"], strict=True):
                    if epoch < start:
                        strip.epochs.append(epoch)
                        strip.attention.append(images)
        return strip

    def record(self, model: nn.Module, epoch: int) -> None:
        """After a wanted epoch, run `model` (unwrapped) on the samples and rewrite the file atomically."""
        if epoch not in self.wanted:
            return
        training = model.training
        model.eval()
        with torch.no_grad():
            output = model(self.inputs)
        model.train(training)
        self.epochs.append(epoch)
        self.attention.append(strip_images(output.attention_image))
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            epochs=np.asarray(self.epochs, dtype=np.int64),
            inputs=strip_images(self.inputs),
            targets=strip_images(self.targets),
            attention=np.stack(self.attention),
        )
        atomic_write_bytes(self.path, buffer.getvalue())
