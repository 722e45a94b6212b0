"""The records of a render folder, one frozen dataclass per JSON file (RenderSet reads and writes them)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from feratt.codec import OMIT_NONE, encode
from feratt.config.framing import Framing
from feratt.config.limits import MAX_CLASSES
from feratt.config.rendering import RenderConfig
from feratt.errors import FerattError
from feratt.manifests.plan import ShardTask
from feratt.names import file_name

RUN_FILE = "render.json"
INDEX_FILE = "index.json"
MANIFESTS = "manifests"
SHARDS = "shards"
INDEX_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BackgroundsRecord:
    """Where a render's background photos came from, and a checksum of their ids."""

    kind: str
    source: str
    count: int
    ids_sha256: str


@dataclass(frozen=True)
class PlanSettings:
    """How many samples the plan draws, and how it cuts them into shards."""

    per_face: int | None
    total: int | None
    balance: str
    shard_size: int


@dataclass(frozen=True)
class RenderRun:
    """render.json: everything that decides a render's bytes, and its plan of shards."""

    bank: str
    bank_sha256: str
    classes: tuple[str, ...]
    config: RenderConfig
    seed: int
    plan: PlanSettings
    compression: str
    compression_level: int
    crops_per_background: int
    backgrounds: BackgroundsRecord
    config_sha256: str = ""
    skipped_backgrounds: tuple[tuple[str, str], ...] = ()
    shards: tuple[ShardTask, ...] = ()

    def __post_init__(self) -> None:
        check_classes(self.classes)

    def digest(self) -> str:
        """The sha256 that identifies the configuration: where the bank lies and the plan do not count."""
        content = encode(self)
        assert isinstance(content, dict)
        for key in ("bank", "config_sha256", "skipped_backgrounds", "shards"):
            del content[key]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def sealed(self) -> RenderRun:
        """This run with its configuration digest filled in."""
        return replace(self, config_sha256=self.digest())


@dataclass(frozen=True)
class ShardRecord:
    """A finished shard's record, beside it: its size, checksum and samples per class."""

    key: str
    path: str
    subject: str
    samples: int
    bytes: int
    sha256: str
    class_counts: dict[str, int]
    config_sha256: str = ""
    skipped_backgrounds: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ManifestShard:
    """A shard as its subject's manifest lists it."""

    path: str
    samples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SubjectManifest:
    """manifests/SUBJECT.json: a subject's shards and its samples per class."""

    subject: str
    samples: int
    class_counts: dict[str, int]
    shards: tuple[ManifestShard, ...]


@dataclass(frozen=True)
class RenderTotals:
    """What a finished render holds, as its index records it."""

    samples: int
    shards: int
    subjects: int
    class_counts: dict[str, int]  # samples per class


@dataclass(frozen=True)
class IndexFraming(Framing):
    """The framing as index.json records it, and whether the bank could be read to fill it in."""

    bank_read: bool = True

    def framing(self) -> Framing:
        """The framing itself."""
        own = {f.name: getattr(self, f.name) for f in fields(Framing) if f.name != "recorded"}
        return Framing(**own)


@dataclass(frozen=True)
class SkippedBackground:
    """A background photo that could not be used, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class RenderIndex:
    """index.json: classes, subjects, totals, configuration, framing and checksums of a finished render."""

    schema_version: int
    classes: tuple[str, ...]
    subjects: dict[str, int]  # samples per subject
    totals: RenderTotals
    config_sha256: str
    bank_sha256: str
    feratt_version: str = ""
    render_config: RenderConfig = field(default_factory=RenderConfig)
    framing: IndexFraming | None = field(default=None, metadata=OMIT_NONE)  # None: made before it existed
    seed: int = 0
    bank: str = ""
    backgrounds: BackgroundsRecord | None = field(default=None, metadata=OMIT_NONE)
    skipped_backgrounds: tuple[SkippedBackground, ...] = ()

    def __post_init__(self) -> None:
        if self.schema_version != INDEX_SCHEMA_VERSION:
            raise FerattError(
                f"schema_version is {self.schema_version}; this feratt reads {INDEX_SCHEMA_VERSION}"
            )
        check_classes(self.classes)


@dataclass(frozen=True)
class ShardRef:
    """One shard of a render as its subject's manifest lists it: where it lies, and what to expect."""

    path: str
    samples: int
    sha256: str
    subject: str
    size: int | None = None  # the side of its images, as the render's configuration says
    classes: int | None = None  # its labels lie in [0, classes)


def check_classes(classes: tuple[str, ...]) -> None:
    """A FerattError unless `classes` are 1 to MAX_CLASSES distinct names."""
    if not 1 <= len(classes) <= MAX_CLASSES or len(set(classes)) != len(classes):
        raise FerattError(f"it names {len(classes)} classes; feratt reads 1 to {MAX_CLASSES} distinct names")


def record_relpath(task: ShardTask) -> str:
    """Where a finished shard's record lies in the folder: beside the shard, same name, .json."""
    return str(Path(task.relpath).with_suffix(".json"))


def manifest_relpath(subject: str) -> str:
    """Where a subject's manifest lies in the folder (the subject's name made a safe file name)."""
    return f"{MANIFESTS}/{file_name(subject)}.json"
