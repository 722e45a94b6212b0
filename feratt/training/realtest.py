"""The "real" test split: a fold's test subjects' unrendered faces from the face bank (Real tables)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from feratt.artifacts.render import RenderSet
from feratt.errors import FerattError
from feratt.training.data import Batch


@dataclass(frozen=True)
class RealFaces:
    """Bank faces framed like the render's samples: channels-first uint8 arrays, as the shards give them."""

    image: np.ndarray  # N x 3 x S x S uint8
    mask: np.ndarray  # N x 1 x S x S uint8, 0/255
    face: np.ndarray  # N x 3 x S x S uint8: the image under its mask, the attention target
    label: np.ndarray  # N int64
    subjects: tuple[str, ...]
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.label)

    def part(self, rank: int, world_size: int) -> RealFaces:
        """Every world_size-th face from `rank`: one rank's share under DDP."""
        pick = slice(rank, None, world_size)
        return RealFaces(
            self.image[pick],
            self.mask[pick],
            self.face[pick],
            self.label[pick],
            self.subjects[pick],
            self.sources[pick],
        )

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Batches in the loader's format (image, mask, face, label)."""
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield {
                "image": self.image[start:stop],
                "mask": self.mask[start:stop],
                "face": self.face[start:stop],
                "label": self.label[start:stop],
            }


class RealTestLoader:
    """Re-iterable batches of real faces, usable wherever the shard loader is."""

    def __init__(self, faces: RealFaces, batch_size: int) -> None:
        self.faces = faces
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[Batch]:
        return self.faces.batches(self.batch_size)


def load_real_faces(
    bank_path: str | Path, subjects: Sequence[str], render: RenderSet | str | Path
) -> tuple[RealFaces, list[str]]:
    """The bank faces of `subjects`, framed as `render` framed its faces, and notes."""
    import cv2

    from feratt.artifacts.bank import FaceBank
    from feratt.renderer.sample import frame_face

    bank = FaceBank.open(bank_path)
    render = RenderSet.open(render)
    notes = []
    classes = list(render.classes)
    if list(bank.classes) != classes:
        raise FerattError(
            f"the real-test bank {bank_path} has classes {', '.join(bank.classes)}; "
            f"the render has {', '.join(classes)}",
            field="real_test",
        )
    if bank.checksum != render.index.bank_sha256:
        notes.append(f"the real-test bank {bank_path} is not the bank the render was made from")
    wanted = set(subjects)
    keep = [i for i, subject in enumerate(bank.subjects) if subject in wanted]
    if not keep:
        raise FerattError(
            f"the real-test bank {bank_path} has no faces of the test subjects {', '.join(sorted(wanted))}",
            field="real_test",
        )
    config = render.config
    images, masks = [], []
    for _, face, face_mask in bank.iter_faces(keep):  # only these faces' pixels, a block at a time
        image, mask = frame_face(face, face_mask, config)
        images.append(cv2.split(image))
        masks.append(mask[None])
    image = np.asarray(images, np.uint8)
    mask = np.asarray(masks, np.uint8)
    faces = RealFaces(
        image=image,
        mask=mask,
        face=image * (mask > 0),
        label=bank.labels[keep].astype(np.int64),
        subjects=tuple(bank.subjects[i] for i in keep),
        sources=tuple(bank.sources[i] for i in keep),
    )
    return faces, notes
