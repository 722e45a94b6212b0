"""Render throughput at 128x128: samples per second with 1 and 2 jobs, for gzip, lzf and no compression.

Backgrounds are 640x480 JPEGs made from scikit-image's photos; faces are the demo face bank. Every
figure is end to end: decoding backgrounds, compositing, compressing and writing shards, records,
manifests and the index. Prints a markdown table, the 2-job speed-up, and the top of a profile.

    .venv/bin/python bench/render_bench.py --samples 4000 --repeats 3
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import statistics
import tempfile
from pathlib import Path

import cv2
from skimage import data

from feratt.artifacts.bank import FaceBank
from feratt.artifacts.render import RenderSet
from feratt.artifacts.render_records import PlanSettings
from feratt.config.rendering import RenderConfig
from feratt.datasets.bank import ensure_demo_bank
from feratt.manifests.plan import face_counts, make_plan
from feratt.renderer.backgrounds import folder_backgrounds
from feratt.renderer.engine import build_run, render_shard, render_tasks

AUTHORS_SAMPLES_PER_SECOND = 80  # their generator, per core, without decoding or writing
PHOTOS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "brick", "grass", "gravel", "moon")


def make_backgrounds(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        photo = getattr(data, name)()
        if photo.ndim == 2:
            photo = cv2.cvtColor(photo, cv2.COLOR_GRAY2RGB)
        photo = cv2.resize(photo, (640, 480), interpolation=cv2.INTER_AREA)
        cv2.imwrite(
            str(folder / f"{name}.jpg"),
            cv2.cvtColor(photo, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 90],
        )


def prepare(work: Path, samples: int, compression: str, level: int):
    bank = FaceBank.open(work / "bank.h5")
    backgrounds = folder_backgrounds(str(work / "backgrounds"))
    counts = face_counts(
        bank.labels, len(bank.classes), per_face=None, total=samples, balance="classes", seed=0
    )
    tasks = make_plan(bank.subjects, counts, shard_size=1000)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    job, run = build_run(
        out=out,
        bank_path=str(work / "bank.h5"),
        bank_sha256=bank.checksum,
        classes=bank.classes,
        tasks=tasks,
        backgrounds=backgrounds,
        config=RenderConfig(),
        seed=0,
        plan=PlanSettings(None, samples, "classes", 1000),
        compression=compression,
        level=level,
        crops_per_background=16,
    )
    RenderSet(out).bind(run, overwrite=True, part=False)
    return job, run, tasks


def measure(work: Path, samples: int, compression: str, level: int, jobs: int) -> float:
    job, run, tasks = prepare(work, samples, compression, level)
    summary = render_tasks(job, run, tasks, jobs=jobs)
    return summary.samples_per_second


def profile(work: Path, samples: int, level: int, lines: int) -> str:
    job, _, tasks = prepare(work, samples, "gzip", level)
    profiler = cProfile.Profile()
    profiler.enable()
    for task in tasks:
        render_shard(job, task)
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(lines)
    return stream.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--level", type=int, default=1, help="gzip level (feratt's default is 1)")
    parser.add_argument("--profile-lines", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="feratt-bench-") as tmp:
        work = Path(tmp)
        make_backgrounds(work / "backgrounds")
        ensure_demo_bank(work / "bank.h5")
        results: dict[tuple[str, int], float] = {}
        for compression in ("gzip", "lzf", "none"):
            for jobs in (1, 2):
                runs = [
                    measure(work, args.samples, compression, args.level, jobs) for _ in range(args.repeats)
                ]
                results[compression, jobs] = statistics.median(runs)
                print(
                    f"{compression:<5} jobs {jobs}: " + ", ".join(f"{r:.0f}" for r in runs) + " samples/s",
                    flush=True,
                )
        print()
        print(f"{args.samples} samples at 128x128, median of {args.repeats} runs, gzip level {args.level}")
        print()
        print(
            "| compression | 1 job (samples/s) | 2 jobs (samples/s) | 2 jobs / 1 job | 1 job / authors' 80 |"
        )
        print("|---|---|---|---|---|")
        for compression in ("gzip", "lzf", "none"):
            one, two = results[compression, 1], results[compression, 2]
            print(
                f"| {compression} | {one:.0f} | {two:.0f} | {two / one:.2f} | "
                f"{one / AUTHORS_SAMPLES_PER_SECOND:.1f}x |"
            )
        print()
        print("Profile of one job, gzip, sorted by own time:")
        print("```")
        print(profile(work, min(args.samples, 2000), args.level, args.profile_lines).strip())
        print("```")


if __name__ == "__main__":
    main()
