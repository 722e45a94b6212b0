"""Small fixture trees in the real on-disk layouts of the face data sets, for tests.

Each `make_*` function writes a tree under `root` and returns a description of what it wrote, so tests
can compute exact expected counts, labels, subjects and paths. Images are tiny but valid files.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CKPLUS_CODES = {
    0: "neutral",
    1: "anger",
    2: "contempt",
    3: "disgust",
    4: "fear",
    5: "happy",
    6: "sadness",
    7: "surprise",
}
BU3DFE_CODES = {
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happy",
    "SA": "sadness",
    "SU": "surprise",
}
JAFFE_CODES = {
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sadness",
    "SU": "surprise",
}
CK48_COUNTS = {"anger": 3, "contempt": 2, "disgust": 3, "fear": 2, "happy": 4, "sadness": 2, "surprise": 4}


@dataclass(frozen=True)
class FixtureFile:
    """One face file a fixture wrote: its path relative to the tree root, class and subject."""

    relpath: str
    class_name: str
    subject: str
    path: Path


@dataclass
class FixtureTree:
    """A written fixture tree: its root (a folder, or the CSV file for csv trees) and its face files."""

    root: Path
    files: list[FixtureFile] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        """Files per class name."""
        return Counter(f.class_name for f in self.files)

    def subjects(self) -> set[str]:
        """The distinct subjects."""
        return {f.subject for f in self.files}

    def relpaths(self) -> list[str]:
        """The sorted relative paths."""
        return sorted(f.relpath for f in self.files)


@dataclass
class CkSequence:
    """One CK+ sequence a fixture wrote."""

    subject: str
    name: str
    frames: list[str]  # relpaths under the root, in frame order
    code: int | None  # emotion code, None for an unlabelled sequence
    emotion_file: Path | None

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.name}"

    @property
    def class_name(self) -> str | None:
        return None if self.code is None else CKPLUS_CODES[self.code]


@dataclass
class CkplusTree:
    """A written CK+ tree."""

    root: Path
    sequences: list[CkSequence]

    def labelled(self) -> list[CkSequence]:
        """Sequences with an emotion file."""
        return [s for s in self.sequences if s.code is not None]

    def unlabelled(self) -> list[CkSequence]:
        """Sequences without an emotion file."""
        return [s for s in self.sequences if s.code is None]

    def subjects(self) -> list[str]:
        """Sorted subjects that have at least one sequence."""
        return sorted({s.subject for s in self.sequences})

    def sequence(self, key: str) -> CkSequence:
        """The sequence "S005/001"."""
        return next(s for s in self.sequences if s.key == key)


def write_image(path: Path, size: tuple[int, int] = (64, 48), mode: str = "L", seed: int = 0) -> Path:
    """Write a small valid image (format from the extension); `size` is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    channels = (3,) if mode == "RGB" else ()
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, *channels), dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def write_emotion_file(path: Path, code: float | str) -> Path:
    """Write a CK+ emotion file holding `code` in CK+'s float format (or `code` as is if a string)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = code if isinstance(code, str) else f"   {float(code):.7e}\n"
    path.write_text(text)
    return path


def write_landmarks_file(path: Path, seed: int = 0) -> Path:
    """Write a CK+ landmarks file of 68 "x y" float pairs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    points = np.random.default_rng(seed).uniform(100.0, 400.0, size=(68, 2))
    path.write_text("".join(f"   {x:.7e}   {y:.7e}\n" for x, y in points))
    return path


def ckplus_subject(index: int) -> str:
    """The CK+ subject id of fixture subject `index` (S005, S010, ...)."""
    return f"S{5 * (index + 1):03d}"


def default_ckplus_code(subject_index: int, sequence_index: int, n_sequences: int) -> int | None:
    """Codes 1-7 by subject; the last sequence of a subject with more than one is unlabelled."""
    if n_sequences > 1 and sequence_index == n_sequences - 1:
        return None
    return 1 + (subject_index + sequence_index) % 7


def make_ckplus_tree(
    root: Path,
    n_subjects: int = 4,
    sequences_per_subject: int = 2,
    frames: int | Callable[[int, int], int] = 5,
    code_for: Callable[[int, int, int], int | None] = default_ckplus_code,
    landmarks: bool = True,
    stray_files: bool = True,
    empty_emotion_folders: bool = True,
    size: tuple[int, int] = (64, 48),
) -> CkplusTree:
    """Write a CK+ tree: `cohn-kanade-images/`, `Emotion/` and optionally `Landmarks/`.

    `frames` is a frame count, or a function (subject index, sequence index) -> count. `code_for`
    (subject index, sequence index, sequences per subject) gives each sequence's emotion code, None for
    unlabelled. The emotion file names the last frame. Stray `.DS_Store` files go into frame folders.
    """
    root.mkdir(parents=True, exist_ok=True)
    sequences = []
    for i in range(n_subjects):
        subject = ckplus_subject(i)
        for j in range(sequences_per_subject):
            name = f"{j + 1:03d}"
            count = frames(i, j) if callable(frames) else frames
            folder = root / "cohn-kanade-images" / subject / name
            folder.mkdir(parents=True, exist_ok=True)
            relpaths = []
            for k in range(1, count + 1):
                stem = f"{subject}_{name}_{k:08d}"
                write_image(folder / f"{stem}.png", size=size, seed=k)
                relpaths.append(f"cohn-kanade-images/{subject}/{name}/{stem}.png")
                if landmarks:
                    write_landmarks_file(
                        root / "Landmarks" / subject / name / f"{stem}_landmarks.txt", seed=k
                    )
            if stray_files:
                (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
            code = code_for(i, j, sequences_per_subject)
            emotion_folder = root / "Emotion" / subject / name
            emotion_file = None
            if code is not None and count:
                emotion_file = write_emotion_file(
                    emotion_folder / f"{subject}_{name}_{count:08d}_emotion.txt", code
                )
            elif empty_emotion_folders:
                emotion_folder.mkdir(parents=True, exist_ok=True)
            sequences.append(CkSequence(subject, name, relpaths, code if count else None, emotion_file))
    (root / "Emotion").mkdir(exist_ok=True)
    if stray_files:
        (root / "cohn-kanade-images" / ".DS_Store").write_bytes(b"\0")
    return CkplusTree(root, sequences)


def make_ckplus_folders_tree(
    root: Path,
    counts: Mapping[str, int] = CK48_COUNTS,
    n_subjects: int = 3,
    ext: str = ".png",
    size: tuple[int, int] = (48, 48),
) -> FixtureTree:
    """Write CK+48-style class folders `<folder>/S###_###_########.png`; `counts` maps folder name to images.

    Images go round-robin over `n_subjects` subjects (S005, S010, ...), three frames per sequence.
    The file's class_name is the folder name as given (an alias such as "happiness" stays as is).
    """
    tree = FixtureTree(root)
    for folder, count in counts.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            subject = ckplus_subject(n % n_subjects)
            sequence = 1 + n // (3 * n_subjects)
            frame = 10 + n // n_subjects % 3
            name = f"{subject}_{sequence:03d}_{frame:08d}{ext}"
            path = write_image(root / folder / name, size=size, seed=n)
            tree.files.append(FixtureFile(f"{folder}/{name}", folder, subject, path))
    return tree


def bu3dfe_subjects(n: int) -> list[str]:
    """`n` BU-3DFE subject ids, alternating female and male: F0001, M0001, F0002, ..."""
    return [f"{'FM'[i % 2]}{i // 2 + 1:04d}" for i in range(n)]


def make_bu3dfe_tree(
    root: Path,
    n_subjects: int = 4,
    intensities: Iterable[int] = (1, 2, 3, 4),
    with_3d: bool = True,
    ethnicities: Sequence[str] = ("WH", "BL", "AE", "AM", "IN", "LA"),
    size: tuple[int, int] = (64, 48),
) -> FixtureTree:
    """Write BU-3DFE subject folders: NE00 plus the six expressions at `intensities`, as `*_F2D.bmp`.

    Each FixtureFile's subject is the subject id; the intensity is in the name (NN after the code).
    With `with_3d`, each image gets an `_F3D.wrl` companion that readers must ignore.
    """
    tree = FixtureTree(root)
    levels = list(intensities)
    for i, subject in enumerate(bu3dfe_subjects(n_subjects)):
        race = ethnicities[i % len(ethnicities)]
        folder = root / subject
        names = [(f"NE00{race}", "neutral")]
        names += [(f"{code}{level:02d}{race}", cls) for code, cls in BU3DFE_CODES.items() for level in levels]
        for n, (middle, cls) in enumerate(names):
            name = f"{subject}_{middle}_F2D.bmp"
            path = write_image(folder / name, size=size, mode="RGB", seed=n)
            tree.files.append(FixtureFile(f"{subject}/{name}", cls, subject, path))
            if with_3d:
                (folder / f"{subject}_{middle}_F3D.wrl").write_text("#VRML V2.0 utf8\n")
    return tree


def make_jaffe_tree(
    root: Path,
    subjects: Sequence[str] = ("KA", "KL", "KM"),
    per_expression: int = 2,
    ext: str = ".tiff",
    size: tuple[int, int] = (64, 48),
) -> FixtureTree:
    """Write a flat JAFFE folder: `per_expression` images of each of 7 expressions for each subject."""
    tree = FixtureTree(root)
    root.mkdir(parents=True, exist_ok=True)
    number = 1
    for subject in subjects:
        for code, cls in JAFFE_CODES.items():
            for pose in range(1, per_expression + 1):
                name = f"{subject}.{code}{pose}.{number}{ext}"
                path = write_image(root / name, size=size, seed=number)
                tree.files.append(FixtureFile(name, cls, subject, path))
                number += 1
    return tree


def make_class_folders_tree(
    root: Path,
    counts: Mapping[str, int],
    subjects: Sequence[str] = ("alice", "bob", "carol"),
    ext: str = ".png",
    name_template: str = "{subject}_{index:03d}",
    size: tuple[int, int] = (64, 48),
) -> FixtureTree:
    """Write `<folder>/<name><ext>` images; `counts` maps folder name to images, subjects go round-robin.

    File stems come from `name_template` (fields: subject, index, folder). class_name is the folder name.
    """
    tree = FixtureTree(root)
    for folder, count in counts.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            subject = subjects[index % len(subjects)]
            name = name_template.format(subject=subject, index=index, folder=folder) + ext
            path = write_image(root / folder / name, size=size, seed=index)
            tree.files.append(FixtureFile(f"{folder}/{name}", folder, subject, path))
    return tree


def make_csv_tree(
    root: Path,
    counts: Mapping[str, int],
    subjects: Sequence[str] = ("p1", "p2", "p3"),
    csv_name: str = "faces.csv",
    images_dir: str = "images",
    absolute: bool = False,
    columns: Sequence[str] = ("path", "label", "subject"),
    extra_rows: Sequence[Mapping[str, str]] = (),
    size: tuple[int, int] = (64, 48),
) -> FixtureTree:
    """Write images under `<root>/<images_dir>/` and a CSV listing them; the tree's root is the CSV file.

    `counts` maps label (as written in the CSV) to images; subjects go round-robin. Paths are relative
    to the CSV's folder unless `absolute`. `extra_rows` are appended as written (not in `files`).
    FixtureFile.relpath is the path as written in the CSV.
    """
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / csv_name
    tree = FixtureTree(csv_path)
    rows: list[Mapping[str, str]] = []
    n = 0
    for label, count in counts.items():
        for index in range(count):
            subject = subjects[index % len(subjects)]
            path = write_image(root / images_dir / f"{label}_{index:03d}.png", size=size, seed=n)
            written = str(path) if absolute else f"{images_dir}/{path.name}"
            rows.append({"path": written, "label": label, "subject": subject})
            tree.files.append(FixtureFile(written, label, subject, path))
            n += 1
    rows.extend(extra_rows)
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return tree


#: COCO category ids of the COCO fixture.
PERSON, CAT, DOG = 1, 17, 18


def photo_array(width, height, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 200, width, dtype=np.float64)[None, :, None] + np.zeros((height, 1, 3))
    return np.clip(base + rng.integers(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)


def write_photo_jpeg(path, width=96, height=80, seed=0):
    Image.fromarray(photo_array(width, height, seed)).save(path, quality=90)


def make_coco_tree(root):
    """A COCO tree: (id, JSON size, what is on disk, categories annotated)."""
    images_dir = root / "images"
    images_dir.mkdir()
    table = [
        (1, (640, 480), "jpeg", [CAT]),
        (2, (640, 480), "jpeg", [PERSON, DOG]),
        (3, (500, 375), "jpeg", [DOG, DOG]),
        (4, (427, 640), "jpeg", []),
        (5, (200, 150), "jpeg", [CAT]),  # shorter side 150: under min_side 256
        (6, (640, 480), "missing", [CAT]),
        (7, (640, 480), "empty", []),
        (8, (640, 480), "truncated", [DOG]),  # exists and is not empty: kept, fails only when decoded
        (9, (640, 427), "jpeg", [PERSON]),
        (10, (480, 640), "jpeg", [CAT, DOG]),
    ]
    images, annotations = [], []
    for image_id, (width, height), disk, categories in table:
        name = f"{image_id:012d}.jpg"
        path = images_dir / name
        if disk == "jpeg":
            write_photo_jpeg(path, seed=image_id)
        elif disk == "empty":
            path.write_bytes(b"")
        elif disk == "truncated":
            write_photo_jpeg(path, seed=image_id)
            path.write_bytes(path.read_bytes()[:300])
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for category in categories:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category})
    document = {
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": PERSON, "name": "person"},
            {"id": CAT, "name": "cat"},
            {"id": DOG, "name": "dog"},
        ],
    }
    annotations_path = root / "instances.json"
    annotations_path.write_text(json.dumps(document))
    return str(annotations_path), str(images_dir)
