"""Streaming a render's shards into training: subjects to shards, a sharded iterable dataset, batches.

`ShardStream` follows webdataset's and timm's reader habits. It holds only paths and sizes, so it pickles
and can be handed to worker processes; every worker opens its own h5py files inside `__iter__`, never
before a fork. Each epoch the shard list is put in an order shared by every rank (shuffled with
seed + epoch when `shuffle`), and its samples, laid end to end, are cut into one contiguous range per
rank and then per worker (global worker `rank * num_workers + worker_id`). Ranges do not follow shard
boundaries, so every rank gets the same number of samples however few or uneven the shards: with
`even` (the default) each rank takes `total // world_size` samples and the last `total % world_size`
(fewer than world_size; a different tail each shuffled epoch) are dropped, so DDP never waits on a rank
that ran out. A rank's workers get counts differing by at most one.

With `samples_per_epoch` S, an epoch is not a pass over the render but a slice of it, so that a render
larger than an epoch shows every epoch samples it has not seen: all samples, laid end to end, are put in
one shuffled order (seeded, the same on every rank), cycle after cycle (a new order once the render is
exhausted), and epoch e takes positions [e * S, (e + 1) * S) of that endless sequence, cut per rank and
per worker as above. A resumed run takes the same slice for the same epoch.

Inside a worker, shuffling opens `shards_per_worker_open` shards at a time, reads blocks of `read_block`
samples from them round-robin in a shuffled block order, and mixes samples through a buffer of
`buffer_size`; without shuffling, samples come in shard order, one block at a time.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

try:
    import cv2
except ImportError:  # a bare GPU machine (bench/gpu_check.py): numpy's transpose instead
    cv2 = None

from feratt.artifacts.render_records import ShardRef
from feratt.artifacts.shard import file_sha256, layout_problems, open_shard
from feratt.config.training import TrainConfig
from feratt.errors import FerattError

#: Datasets read by default, and the item key each one fills.
DEFAULT_FIELDS: tuple[str, ...] = ("images", "masks", "faces", "labels")
ITEM_KEYS: dict[str, str] = {
    "images": "image",
    "masks": "mask",
    "faces": "face",
    "labels": "label",
    "sample_index": "sample_index",
}

#: One sample as a stream yields it: its arrays (images channels first) and scalars, by item key.
Item = dict[str, np.ndarray | np.generic]
#: A batch as a loader yields it: arrays or tensors by item key, samples along the first axis.
Batch = Mapping[str, np.ndarray | torch.Tensor]

# Shards whose sha256 this process has checked, keyed by path, expected digest, size and mtime.
_VERIFIED: set[tuple[str, str, int, int]] = set()


def _seed_words(*values: int) -> list[int]:
    return [int(v) % (1 << 63) for v in values]


def _verify_shard(ref: ShardRef) -> None:
    """Check a shard's sha256 against its manifest, once per process while the file is unchanged."""
    try:
        stat = os.stat(ref.path)
    except OSError:
        raise FerattError(f"shard {ref.path} is missing (rerun feratt render to redo it)") from None
    key = (ref.path, ref.sha256, stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    if file_sha256(ref.path) != ref.sha256:
        raise FerattError(
            f"shard {ref.path} is corrupt: its sha256 does not match its manifest "
            "(rerun feratt render to redo it; feratt inspect --verify lists every bad shard)"
        )
    _VERIFIED.add(key)


class _PieceReader:
    """Samples [start, stop) of one shard, read a block at a time; the h5py file is opened here."""

    def __init__(
        self,
        ref: ShardRef,
        rows: tuple[int, int] | np.ndarray,
        fields: tuple[str, ...],
        block: int,
        verify: bool,
        rng: np.random.Generator | None,
    ) -> None:
        if verify:
            _verify_shard(ref)
        try:
            self.file = open_shard(ref.path)
        except OSError as exc:
            raise FerattError(f"cannot read shard {ref.path}: {exc}") from None
        try:
            missing = [name for name in fields if name not in self.file]
            if missing:
                raise FerattError(f"shard {ref.path} has no dataset {missing[0]!r}")
            self.datasets = {name: self.file[name] for name in fields}
            length = self.datasets[fields[0]].shape[0]
            if length != ref.samples:
                raise FerattError(
                    f"shard {ref.path} holds {length} samples, its manifest {ref.samples}: "
                    "the render folder changed after the manifests were written"
                )
            # Shapes and labels are checked before anything is sized from them (its checksum may match).
            problems = layout_problems(self.file, ref.size, ref.classes, ref.samples)
            if problems:
                raise FerattError(
                    f"shard {ref.path} does not follow the shard schema ({'; '.join(problems[:3])}); "
                    "feratt inspect --verify lists every problem"
                )
        except BaseException:
            self.file.close()
            raise
        blocks: list[Any]
        if isinstance(rows, tuple):
            start, stop = rows
            blocks = [(int(s), min(int(s) + block, stop)) for s in range(start, stop, block)]
        else:  # increasing row numbers, as h5py's fancy indexing needs
            blocks = [rows[s : s + block] for s in range(0, len(rows), block)]
        if rng is not None:
            blocks = [blocks[int(i)] for i in rng.permutation(len(blocks))]
        self.blocks = deque(blocks)
        self.path = ref.path

    @property
    def done(self) -> bool:
        return not self.blocks

    def read(self) -> dict[str, np.ndarray]:
        """The next block: item key -> array with one row per sample, as stored (images channels last)."""
        rows = self.blocks.popleft()
        # h5py reads strictly increasing rows; a slice spanning two orders may hold a row twice.
        if isinstance(rows, tuple):
            where, again = slice(*rows), slice(None)
        else:
            where, again = np.unique(rows, return_inverse=True)
        try:
            block = {
                ITEM_KEYS.get(name, name): dataset[where][again] for name, dataset in self.datasets.items()
            }
        except OSError as exc:
            first, last = (rows[0], rows[1]) if isinstance(rows, tuple) else (rows[0], rows[-1] + 1)
            raise FerattError(f"cannot read samples {first}-{last} of shard {self.path}: {exc}") from None
        for key in ("label", "sample_index"):
            if key in block:
                block[key] = block[key].astype(np.int64)
        return block

    def close(self) -> None:
        self.file.close()


def _channels_first(image: np.ndarray) -> np.ndarray:
    """A new (C,H,W) array from an (H,W,C) one; cv2.split is several times faster than numpy's transpose."""
    out = np.empty((image.shape[2], *image.shape[:2]), image.dtype)
    if cv2 is not None and 1 < image.shape[2] <= 4:
        cv2.split(image, list(out))
    else:
        out[:] = image.transpose(2, 0, 1)
    return out


def _item(block: dict[str, np.ndarray], row: int) -> Item:
    """Sample `row` of a block, copied out (so it keeps no block alive), images channels first."""
    item: Item = {}
    for key, array in block.items():
        if array.ndim == 4:
            item[key] = _channels_first(array[row])
        elif key == "mask" and array.ndim == 3:
            item[key] = array[row][None].copy()
        else:
            item[key] = array[row].copy()
    return item


class ShardStream(IterableDataset):
    """An iterable over shards, split over ranks and workers, every rank yielding the same count per epoch.

    Items are dicts of numpy arrays: image (3,H,W) uint8, mask (1,H,W) uint8, face (3,H,W) uint8,
    label int64 and sample_index int64 (always read), keyed as in ITEM_KEYS.
    """

    def __init__(
        self,
        shards: Sequence[ShardRef],
        shuffle: bool = False,
        seed: int = 0,
        buffer_size: int = 1000,
        verify: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
        even: bool = True,
        shards_per_worker_open: int = 4,
        read_block: int = 64,
        samples_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if rank is None or world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            world_size = torch.distributed.get_world_size() if distributed else 1
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError("samples_per_epoch must be at least 1")
        if buffer_size < 0 or shards_per_worker_open < 1 or read_block < 1:
            raise ValueError("buffer_size must be >= 0, shards_per_worker_open and read_block >= 1")
        self.shards = list(shards)
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = buffer_size
        self.verify = verify
        self.rank = rank
        self.world_size = world_size
        self.fields = tuple(dict.fromkeys([*fields, "sample_index"]))
        self.even = even
        self.shards_per_worker_open = shards_per_worker_open
        self.read_block = read_block
        self.samples_per_epoch = samples_per_epoch
        # Shared memory, so that persistent workers see set_epoch made in the main process.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def samples(self) -> int:
        """Samples in all the shards."""
        return sum(ref.samples for ref in self.shards)

    @property
    def samples_per_rank(self) -> int:
        """Samples this rank yields per epoch: the same on every rank when `even` (less any drop_last)."""
        start, stop = self._rank_range()
        return stop - start

    @property
    def epoch(self) -> int:
        """The epoch set last (0 at first)."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch, which seeds the shard order (call with the same epoch on every rank)."""
        self._epoch.fill_(int(epoch))

    def shard_order(self, epoch: int) -> list[int]:
        """The epoch's order of the shard list, identical on every rank."""
        if not self.shuffle:
            return list(range(len(self.shards)))
        return (
            np.random.default_rng(_seed_words(self.seed, epoch, 0x5EED))
            .permutation(len(self.shards))
            .tolist()
        )

    def _rank_range(self) -> tuple[int, int]:
        total, size = self.samples_per_epoch or self.samples, self.world_size
        if self.even:
            per_rank = total // size
            return self.rank * per_rank, (self.rank + 1) * per_rank
        return self.rank * total // size, (self.rank + 1) * total // size

    def pieces(self, epoch: int, worker_id: int = 0, num_workers: int = 1) -> list[tuple[int, int, int]]:
        """The (shard, start, stop) pieces of this rank's worker `worker_id` in `epoch`, in reading order."""
        low, high = self._worker_range(worker_id, num_workers)
        pieces = []
        offset = 0
        for index in self.shard_order(epoch):
            size = self.shards[index].samples
            start, stop = max(low, offset), min(high, offset + size)
            if start < stop:
                pieces.append((index, start - offset, stop - offset))
            offset += size
        return pieces

    def _worker_range(self, worker_id: int, num_workers: int) -> tuple[int, int]:
        first, last = self._rank_range()
        count = last - first
        return first + worker_id * count // num_workers, first + (worker_id + 1) * count // num_workers

    def slice_positions(self, epoch: int, worker_id: int = 0, num_workers: int = 1) -> np.ndarray:
        """With `samples_per_epoch`, the render positions (shards end to end) this worker reads in `epoch`."""
        if self.samples_per_epoch is None:
            raise ValueError("slice_positions needs samples_per_epoch")
        total = self.samples
        if total == 0:
            return np.zeros(0, np.int64)
        low, high = self._worker_range(worker_id, num_workers)
        begin, end = epoch * self.samples_per_epoch + low, epoch * self.samples_per_epoch + high
        parts = []
        for cycle in range(begin // total, -(-end // total)):
            order = np.random.default_rng(_seed_words(self.seed, cycle, 0x511CE)).permutation(total)
            parts.append(order[max(begin - cycle * total, 0) : min(end - cycle * total, total)])
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _slice_pieces(self, epoch: int, worker_id: int, num_workers: int) -> list[tuple[int, np.ndarray]]:
        """The (shard, increasing rows) pieces of this worker's slice of `epoch`."""
        positions = self.slice_positions(epoch, worker_id, num_workers)
        offsets = np.cumsum([0] + [ref.samples for ref in self.shards])
        shard_of = np.searchsorted(offsets, positions, side="right") - 1
        return [
            (int(index), np.sort(positions[shard_of == index] - offsets[index]))
            for index in np.unique(shard_of)
        ]

    def __iter__(self) -> Iterator[Item]:
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        pieces: list[Any] = (
            self._slice_pieces(epoch, worker_id, num_workers)
            if self.samples_per_epoch is not None
            else self.pieces(epoch, worker_id, num_workers)
        )
        if not self.shuffle:
            yield from self._in_order(pieces)
            return
        worker = self.rank * num_workers + worker_id
        rng = np.random.default_rng(_seed_words(self.seed, epoch, worker, 0xB0FF))
        if self.samples_per_epoch is not None:  # the slice's shards, in a random order
            pieces = [pieces[int(i)] for i in rng.permutation(len(pieces))]
        yield from self._shuffled(pieces, rng)

    def _open(self, piece: tuple[Any, ...], rng: np.random.Generator | None) -> _PieceReader:
        index, *rows = piece
        where = (rows[0], rows[1]) if len(rows) == 2 else rows[0]
        return _PieceReader(self.shards[index], where, self.fields, self.read_block, self.verify, rng)

    def _in_order(self, pieces: list[Any]) -> Iterator[Item]:
        for piece in pieces:
            reader = self._open(piece, None)
            try:
                while not reader.done:
                    block = reader.read()
                    for row in range(len(block["sample_index"])):
                        yield _item(block, row)
            finally:
                reader.close()

    def _shuffled(self, pieces: list[Any], rng: np.random.Generator) -> Iterator[Item]:
        pending = deque(pieces)
        readers: list[_PieceReader] = []
        buffer: list[Item] = []
        capacity = max(self.buffer_size, 1)
        try:
            while pending or readers:
                while pending and len(readers) < self.shards_per_worker_open:
                    readers.append(self._open(pending.popleft(), rng))
                for reader in list(readers):
                    block = reader.read()
                    if reader.done:
                        reader.close()
                        readers.remove(reader)
                    for row in rng.permutation(len(block["sample_index"])):
                        item = _item(block, int(row))
                        if len(buffer) < capacity:
                            buffer.append(item)
                            continue
                        slot = int(rng.integers(capacity))
                        yield buffer[slot]
                        buffer[slot] = item
            for slot in rng.permutation(len(buffer)):
                yield buffer[int(slot)]
        finally:
            for reader in readers:
                reader.close()


def _worker_message(message: str) -> str:
    """The original message of a FerattError re-raised by a DataLoader from a worker process."""
    marker = "FerattError: "
    if message.startswith("Caught FerattError") and marker in message:
        return message[message.rindex(marker) + len(marker) :].strip()
    return message


class _Loader(DataLoader):
    """A DataLoader that gives a worker's FerattError back with its own one-line message."""

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from super().__iter__()
        except FerattError as exc:
            raise FerattError(_worker_message(str(exc))) from None


def make_loader(
    stream: ShardStream,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over a ShardStream; workers persist across epochs and see set_epoch."""
    extra: dict[str, bool] = {"persistent_workers": True} if num_workers > 0 else {}
    return _Loader(
        stream,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        **extra,
    )


def normalise_batch(
    batch: Batch,
    device: torch.device | str,
    noise_sigma: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Move a batch to the device, uint8 fields (image, face, mask) becoming float in [0, 1] there.

    With `noise_sigma` (low, high), each sample's image gets Gaussian noise of a sigma drawn uniformly
    from [low, high], in [0, 1] RGB space, and is clipped back to [0, 1]; `generator` must live on
    `device`. The image before noise is kept as `clean_image`, for the attention target.
    """
    device = torch.device(device)
    result: dict[str, torch.Tensor] = {}
    for key, value in batch.items():
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        tensor = tensor.to(device, non_blocking=True)
        if tensor.dtype == torch.uint8:
            tensor = tensor.float().div_(255.0)
        result[key] = tensor
    if noise_sigma is not None and "image" in result:
        low, high = (float(v) for v in noise_sigma)
        if not 0 <= low <= high:
            raise FerattError(f"the noise sigma range must satisfy 0 <= low <= high, not {low}:{high}")
        image = result["image"]
        shape = (image.shape[0],) + (1,) * (image.dim() - 1)
        sigma = torch.rand(shape, device=device, generator=generator) * (high - low) + low
        noise = torch.randn(image.shape, device=device, generator=generator)
        result["clean_image"] = image
        result["image"] = (image + noise.mul_(sigma)).clamp_(0.0, 1.0)
    return result


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="area")


def prepare_inputs(batch: dict[str, torch.Tensor], config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The network input and the attention target of a normalised batch, at the model's input size."""
    images = batch["image"]
    if config.att_target == "input-masked":
        # The input under the face mask, as the paper's equation (1); never the noise added for training.
        target = batch.get("clean_image", images) * (batch["mask"] > 0.5)
    else:
        target = batch["face"]
    return _resize(images, config.in_size), _resize(target, config.in_size)
