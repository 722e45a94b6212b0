"""Training loader throughput at 128x128: ShardStream + DataLoader with 0, 1 and 2 workers, beside h5py.

Renders its own data first: the demo face bank (24 subjects, 336 faces) at --per-face 12, about 4000
samples, on 640x480 backgrounds made from scikit-image's photos. Then, for each reader, it reads
every sample's image, mask, face and label:
- `plain h5py`: every shard's four datasets read whole with h5py, no torch, no shuffling;
- `loader, N workers`: a shuffled ShardStream (buffer 1000, sha256 checks on) through make_loader,
  batches of --batch-size. Workers persist, so an epoch after the first neither starts processes nor
  rechecks sha256s; the first epoch (`cold`) does both and is shown apart.

Each figure is the median of --repeats passes over the whole render; the ratio is to the plain read.
`stream_loader`, `plain_read`, `loader_epoch` and `timed` need only torch, numpy, h5py and feratt's
training code: bench/gpu_check.py reads its shards through them.

    .venv/bin/python bench/loader_bench.py --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import h5py

from feratt.artifacts.render import RenderSet
from feratt.training.data import ShardRef, ShardStream, make_loader

FIELDS = ("images", "masks", "faces", "labels")


def build_render(work: Path, size: int, per_face: int) -> Path:
    # The renderer's dependencies (OpenCV, scikit-image, click) load only here.
    from click.testing import CliRunner
    from render_bench import make_backgrounds

    from feratt.cli import main
    from feratt.datasets.bank import ensure_demo_bank

    bank = ensure_demo_bank(work / "bank.h5")
    make_backgrounds(work / "backgrounds")
    out = work / "render"
    args = ["render", bank, "--out", out, "--backgrounds", work / "backgrounds"]
    args += ["--size", size, "--per-face", per_face]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return out


def plain_read(paths: list[str]) -> int:
    """Read every shard's four datasets whole; return the sample count."""
    samples = 0
    for path in paths:
        with h5py.File(path, "r") as h5:
            arrays = [h5[name][()] for name in FIELDS]
        samples += len(arrays[-1])
    return samples


def stream_loader(
    refs: list[ShardRef], batch_size: int, workers: int, pin_memory: bool = False, drop_last: bool = False
) -> tuple[ShardStream, object]:
    """A shuffled ShardStream (buffer 1000, sha256 checks on) and its DataLoader, as training reads."""
    stream = ShardStream(refs, shuffle=True, seed=0, buffer_size=1000, verify=True)
    return stream, make_loader(stream, batch_size, workers, pin_memory=pin_memory, drop_last=drop_last)


def loader_epoch(loader, stream: ShardStream, epoch: int) -> int:
    stream.set_epoch(epoch)
    samples = 0
    for batch in loader:
        samples += len(batch["label"])
    return samples


def timed(run) -> tuple[float, int]:
    start = time.perf_counter()
    samples = run()
    return time.perf_counter() - start, samples


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, help="Folder for the bank and render (default: a temporary one)."
    )
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--per-face", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--workers", default="0,1,2", help="Comma-separated worker counts.")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="feratt-loader-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        out = work / "render"
        if not (out / "index.json").is_file():
            started = time.perf_counter()
            build_render(work, args.size, args.per_face)
            print(f"rendered in {time.perf_counter() - started:.1f} s")
        index = RenderSet.open(out)
        refs = RenderSet.open(out).shards(sorted(index.subjects))
        total = sum(r.samples for r in refs)
        paths = [r.path for r in refs]
        subjects = len(index.subjects)
        print(f"{total} samples at {args.size}x{args.size} in {len(refs)} shards of {subjects} subjects")

        plain_read(paths)  # warm the page cache, as every later pass is
        rows: list[tuple[str, float, float | None]] = []
        rates = []
        for _ in range(args.repeats):
            seconds, samples = timed(lambda: plain_read(paths))
            assert samples == total
            rates.append(samples / seconds)
        plain = statistics.median(rates)
        rows.append(("plain h5py (4 datasets, whole shards)", plain, None))

        for workers in (int(w) for w in args.workers.split(",")):
            stream, loader = stream_loader(refs, args.batch_size, workers)
            seconds, samples = timed(lambda loader=loader, stream=stream: loader_epoch(loader, stream, 0))
            assert samples == total
            cold = samples / seconds
            rates = []
            for epoch in range(1, args.repeats + 1):
                seconds, samples = timed(
                    lambda loader=loader, stream=stream, epoch=epoch: loader_epoch(loader, stream, epoch)
                )
                assert samples == total
                rates.append(samples / seconds)
            rows.append((f"ShardStream + DataLoader, {workers} workers", statistics.median(rates), cold))
            del loader

        print()
        print("| reader | samples/s (median) | ratio to plain read | first epoch, samples/s |")
        print("|---|---:|---:|---:|")
        for name, rate, cold in rows:
            first = f"{cold:.0f}" if cold is not None else "-"
            print(f"| {name} | {rate:.0f} | {rate / plain:.2f} | {first} |")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main_bench()
