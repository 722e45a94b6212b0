"""The render plan: which faces each subject's samples use, cut into shards that never mix subjects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feratt.errors import FerattError
from feratt.names import file_name


@dataclass(frozen=True)
class ShardTask:
    """One shard to render: its subject, its place in the plan, and the bank face of each sample."""

    subject: str
    index: int
    first_sample: int
    faces: tuple[int, ...]

    @property
    def relpath(self) -> str:
        """Where the shard lies in its render folder: the subject's name made a safe folder name."""
        return f"shards/{file_name(self.subject)}/shard-{self.index:05d}.h5"

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.index:05d}"

    def __len__(self) -> int:
        return len(self.faces)


def _spread(count: int, faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`count` picks from `faces`, every face as often as possible, the remainder to random faces."""
    rounds, rest = divmod(count, len(faces))
    picks = np.concatenate([np.tile(faces, rounds), rng.permutation(faces)[:rest]])
    return np.sort(picks, kind="stable")


def face_counts(
    labels: np.ndarray,
    n_classes: int,
    *,
    per_face: int | None,
    total: int | None,
    balance: str,
    seed: int,
) -> np.ndarray:
    """How many samples each face of the bank gets."""
    n_faces = len(labels)
    if (per_face is None) == (total is None):
        raise FerattError("give exactly one of samples per face and a total", field="total")
    if per_face is not None:
        return np.full(n_faces, per_face, np.int64)
    rng = np.random.default_rng([seed, 0x91A4])
    counts = np.zeros(n_faces, np.int64)
    if balance == "faces":
        np.add.at(counts, _spread(total, np.arange(n_faces), rng), 1)
        return counts
    if balance != "classes":
        raise FerattError(f"unknown balance {balance!r}; valid: classes, faces", field="balance")
    present = [c for c in range(n_classes) if (labels == c).any()]
    per_class, rest = divmod(total, len(present))
    for rank, label in enumerate(present):
        quota = per_class + (1 if rank < rest else 0)
        np.add.at(counts, _spread(quota, np.flatnonzero(labels == label), rng), 1)
    return counts


def make_plan(subjects: list[str], counts: np.ndarray, shard_size: int) -> list[ShardTask]:
    """Cut each subject's samples into shards of at most `shard_size`; sample numbers run across the plan."""
    if shard_size < 1:
        raise FerattError("the shard size must be at least 1", field="shard_size")
    by_subject: dict[str, list[int]] = {}
    for face, subject in enumerate(subjects):
        by_subject.setdefault(subject, []).append(face)
    tasks: list[ShardTask] = []
    next_sample = 0
    for subject in sorted(by_subject):
        faces = np.asarray(by_subject[subject])
        rounds = int(counts[faces].max(initial=0))
        # Interleave rounds over the subject's faces so every shard sees many faces, not one face repeated.
        order = [int(f) for r in range(rounds) for f in faces if counts[f] > r]
        for index, start in enumerate(range(0, len(order), shard_size)):
            chunk = tuple(order[start : start + shard_size])
            tasks.append(ShardTask(subject, index, next_sample, chunk))
            next_sample += len(chunk)
    return tasks


def select_part(tasks: list[ShardTask], part: int, parts: int) -> list[ShardTask]:
    """The shards of part `part` (1-based) of `parts`, dealt round-robin so parts get similar work."""
    if not 1 <= part <= parts:
        raise FerattError(f"part {part}/{parts}: the part must lie between 1 and {parts}", field="part")
    return tasks[part - 1 :: parts]
