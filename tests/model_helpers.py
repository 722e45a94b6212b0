"""Untrained models saved as feratt checkpoints, and group photos of pasted faces, for the inference tests."""

from pathlib import Path

import cv2
import numpy as np
import torch

from feratt.config.framing import Framing
from feratt.config.training import TrainConfig
from feratt.datasets.demo import DEMO_CLASSES
from feratt.inference.scenes import Scene, astronaut_portrait, compose, demo_portrait
from feratt.training.build import build_model
from feratt.training.checkpoints import epoch_checkpoint

#: The framing of the demo render (`make demo`): 64 px samples framed by the mask box, padded by 0.05.
DEMO_FRAMING = Framing(size=64, fit_mask=0.05)


def untrained_checkpoint(
    path: Path, method: str, framing: Framing | None = DEMO_FRAMING, seed: int = 0
) -> Path:
    """A cpu-small model of `method` at random, saved as a checkpoint (framing None: an older one).

    The classifier's weights are scaled up so that its softmax is far from uniform: comparisons of
    probabilities then mean something.
    """
    config = TrainConfig(method=method, preset="cpu-small").resolved()
    torch.manual_seed(seed)
    model = build_model(config, len(DEMO_CLASSES))
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(40.0)
    optimizer = torch.optim.Adam(model.parameters())
    epoch_checkpoint(config, list(DEMO_CLASSES), 0, 3, 0.5, model, optimizer, framing).save(path)
    return path


def group_scene() -> Scene:
    """Three faces on scikit-image's coffee photo: two drawn demo faces and the astronaut."""
    return compose(
        "coffee",
        (640, 480),
        [
            (demo_portrait(0, "happy"), 40, 160, 140),
            (demo_portrait(3, "anger"), 250, 90, 120),
            (astronaut_portrait(), 440, 170, 130),
        ],
    )


def write_rgb(path: Path, image: np.ndarray) -> Path:
    """Write an RGB image with OpenCV (PNG or JPEG by the name)."""
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0, fourcc: str = "mp4v") -> Path:
    """Write RGB frames as a video with OpenCV."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path
