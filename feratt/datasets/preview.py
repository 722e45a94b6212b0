"""Contact sheet of a face bank: a row per class, each face with its mask outline, label and subject."""

from __future__ import annotations

import cv2
import numpy as np

from feratt.artifacts.bank import FaceBank

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_HEADER_WIDTH = 96
_CAPTION_HEIGHT = 14


def pick_faces(bank: FaceBank, label: int, count: int) -> list[int]:
    """Up to `count` faces of a class, taking one per subject in turn so the row shows many people."""
    by_subject: dict[str, list[int]] = {}
    for index in np.flatnonzero(bank.labels == label):
        by_subject.setdefault(bank.subjects[index], []).append(int(index))
    picked: list[int] = []
    queues = [by_subject[s] for s in sorted(by_subject)]
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


def face_tile(image: np.ndarray, mask: np.ndarray, caption: str, tile: int) -> np.ndarray:
    """One face resized to `tile`, its mask outlined in green, with a caption underneath."""
    face = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask, (tile, tile), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(
        (small_mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    cv2.drawContours(face, contours, -1, (0, 255, 0), 1, cv2.LINE_AA)
    out = np.full((tile + _CAPTION_HEIGHT, tile, 3), 255, np.uint8)
    out[:tile] = face
    cv2.putText(out, caption, (2, tile + _CAPTION_HEIGHT - 4), _FONT, 0.3, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def contact_sheet(bank: FaceBank, per_row: int = 8, tile: int = 96) -> np.ndarray:
    """Draw the sheet as an RGB array."""
    rows = []
    cell_height = tile + _CAPTION_HEIGHT
    for label, name in enumerate(bank.classes):
        row = np.full((cell_height, _HEADER_WIDTH + per_row * (tile + 2), 3), 255, np.uint8)
        picked = pick_faces(bank, label, per_row)
        header = f"{name} ({int((bank.labels == label).sum())})"
        cv2.putText(row, header, (4, cell_height // 2), _FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        for column, index in enumerate(picked):
            x = _HEADER_WIDTH + column * (tile + 2)
            caption = f"{name[:8]} {bank.subjects[index]}"
            row[:, x : x + tile] = face_tile(bank.images[index], bank.masks[index], caption, tile)
        rows.append(row)
        rows.append(np.full((2, row.shape[1], 3), 200, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB image."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()
