"""Check and measure feratt's CUDA path in one command of under 5 minutes; `--smoke`: on a CPU, seconds.

Made for a GPU machine that may hold another Python and torch, none of feratt's other dependencies and no
network: it needs only torch, numpy and h5py, imports feratt from this checkout, and skips whatever needs
more, saying so. It prints what it finds and writes it as JSON (--out), section by section:

- environment: the GPU's name and memory, torch, CUDA and cuDNN versions, bfloat16 support, the AMP dtype
  `--amp auto` picks, and which optional modules are missing;
- throughput: each method at the paper preset (128 px, batch 200) with AMP (`--amp auto`) and channels_last,
  without and then with torch.compile: images/s of forward + backward + Adam step, and peak GPU memory
  (bench/train_step_bench.py's TrainStep on one random batch);
- loader: the same steps fed from shards on disk with 2, 4 and 8 loader workers: the share of the step
  time spent waiting for the next batch (bench/loader_bench.py's loader), beside a plain h5py read;
- real run: a few epochs of each method through `feratt train`'s API (cpu-small settings, AMP on), checking
  that every loss falls and test accuracy rises above chance (`--no-real-run` skips it: bench/gpu_run.sh
  trains the methods through the command line instead).

Without --shards it makes its own in seconds: a demo render with feratt's renderer when OpenCV and
scikit-image are there, else faces of drawn stripes (one orientation a class) written with numpy and h5py
in feratt's shard format. `--smoke` shrinks everything (64 px, a quarter of the widths, batches of 4, two
epochs of six subjects, workers 0 and 1, bfloat16 autocast on the CPU for the throughput and loader rows
and float32 real runs, no compile) so that CI runs the same code in seconds and it never rots; its checks
are reported, not enforced. Compile rows come last and everything stops at --budget seconds, so a slow
compiler costs only those rows.

    python bench/gpu_check.py --out gpu_check.json                  # on a GPU machine
    python bench/gpu_check.py --smoke --out /tmp/gpu_check.json     # anywhere, in seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for folder in (HERE.parent, HERE):  # feratt from this checkout, installed or not; the other benchmarks
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from loader_bench import plain_read, stream_loader, timed  # noqa: E402
from train_step_bench import TrainStep, step_times, synchronize  # noqa: E402

from feratt.artifacts.render import RenderSet  # noqa: E402
from feratt.artifacts.run import FoldFolder  # noqa: E402
from feratt.config.methods import METHODS  # noqa: E402
from feratt.training.accelerator import amp_dtype, cuda_bf16_supported  # noqa: E402
from feratt.training.data import normalise_batch, prepare_inputs  # noqa: E402

#: Modules some of feratt needs and this script does without; each one missing is reported.
OPTIONAL = ("cv2", "skimage", "scipy", "sklearn", "click", "matplotlib", "PIL", "tqdm")
#: The classes of the drawn faces.
PATTERN_CLASSES = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")


@dataclass(frozen=True)
class Plan:
    """What one run measures, and at what sizes."""

    size: int = 128  # the paper preset's input
    width: float = 1.0
    batch: int = 200
    amp: str = "auto"
    steps: int = 10  # timed steps after warm-up
    warmup: int = 3
    workers: tuple[int, ...] = (2, 4, 8)
    loader_steps: int = 12
    compile: bool = True
    subjects: int = 24  # of the shards made when none are given
    per_subject: int = 168  # 4,032 samples: 20 batches of 200
    run_epochs: int = 5
    run_batch: int = 32
    run_workers: int = 4
    run_fold_size: int = 10
    run_max_batches: int | None = None
    jobs: int = 8  # render processes
    enforce: bool = True
    real_run: bool = True
    run_amp: str | None = None  # the real runs' --amp; None: `amp`


SMOKE = Plan(
    size=64, width=0.25, batch=4, amp="bf16", steps=1, warmup=1, workers=(0, 1), loader_steps=1,
    compile=False, subjects=6, per_subject=14, run_epochs=2, run_batch=8, run_workers=0, run_fold_size=2,
    run_max_batches=3, jobs=1, enforce=False, run_amp="off",
)  # fmt: skip
# In --smoke the real runs train in float32: bf16 autocast is emulated on the CPU, 5 to 10 times slower,
# and the throughput and loader rows exercise it already.


class Report:
    """The JSON document: filled section by section, rewritten after each so an interrupted run keeps some."""

    def __init__(self, path: Path | None, mode: str) -> None:
        self.path = path
        self.started = time.perf_counter()
        self.data: dict[str, Any] = {"script": "bench/gpu_check.py", "mode": mode, "skipped": []}

    def skip(self, what: str, why: str) -> None:
        """Record and print something not measured, and why."""
        self.data["skipped"].append({"what": what, "why": why})
        print(f"skipped: {what}: {why}", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def save(self) -> None:
        self.data["seconds"] = round(self.elapsed(), 1)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.path)


def _available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def environment(device: torch.device, plan: Plan) -> dict[str, Any]:
    """The machine and the software: what the figures were measured on."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "device": str(device),
        "amp": plan.amp,
        "amp_dtype": str(amp_dtype(plan.amp, device)),
        "missing_modules": [name for name in OPTIONAL if not _available(name)],
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            bf16_native=cuda_bf16_supported(),
        )
    return env


def pattern_render(out: Path, subjects: int, per_subject: int, size: int, seed: int = 0) -> Path:
    """A render folder of drawn faces on noise, one stripe orientation a class, in feratt's shard format."""
    from feratt.artifacts.render_records import BackgroundsRecord, PlanSettings, RenderRun, ShardRecord
    from feratt.artifacts.shard import ShardData, write_shard
    from feratt.config.rendering import RenderConfig
    from feratt.manifests.plan import ShardTask

    folder = RenderSet(out)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    tasks, records, first = [], {}, 0
    for index in range(subjects):
        subject, tone = f"P{index:02d}", rng.uniform(0.4, 0.9, 3)
        labels = np.arange(per_subject) % len(PATTERN_CLASSES)
        images = np.empty((per_subject, size, size, 3), np.uint8)
        faces, masks = np.empty_like(images), np.empty((per_subject, size, size), np.uint8)
        for i, label in enumerate(labels):
            cy, cx = 0.5 + rng.uniform(-0.08, 0.08, 2)
            mask = ((yy - cy) / 0.38) ** 2 + ((xx - cx) / 0.3) ** 2 <= 1
            angle = np.pi * label / len(PATTERN_CLASSES)
            phase = 12 * np.pi * ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) + rng.uniform(0, 6.3)
            face = tone * (0.55 + 0.45 * np.sin(phase))[..., None] * mask[..., None] * 255
            faces[i], masks[i] = face.astype(np.uint8), mask * 255
            images[i] = np.where(mask[..., None], faces[i], rng.integers(0, 256, (size, size, 3), np.uint8))
        n = per_subject
        data = ShardData(
            images=images, masks=masks, faces=faces, labels=labels.astype(np.int16),
            face_index=np.arange(n, dtype=np.int32), sample_index=np.arange(first, first + n),
            background_ids=["noise"] * n, matrices=np.tile(np.eye(3), (n, 1, 1)),
            crops=np.zeros((n, 3), np.float32), luminance_ratio=np.ones(n, np.float32),
            params=np.zeros((n, 1), np.float32),
        )  # fmt: skip
        task = ShardTask(subject, 0, first, tuple(range(n)))
        digest = write_shard(folder.shard_path(task), data, compression="gzip", level=1)
        counts = {name: int((labels == k).sum()) for k, name in enumerate(PATTERN_CLASSES)}
        size_bytes = folder.shard_path(task).stat().st_size
        records[task.key] = ShardRecord(task.key, task.relpath, subject, n, size_bytes, digest, counts)
        tasks.append(task)
        first += n
    run = RenderRun(
        bank="", bank_sha256="", classes=PATTERN_CLASSES, config=RenderConfig(size=size), seed=seed,
        plan=PlanSettings(per_subject, None, "classes", per_subject), compression="gzip", compression_level=1,
        crops_per_background=1, backgrounds=BackgroundsRecord("uniform noise", "numpy", 0, ""),
        shards=tuple(tasks),
    ).sealed()  # fmt: skip
    folder.finalize(run, records)
    return out


def demo_render(out: Path, work: Path, plan: Plan) -> Path:
    """A render of the demo face bank at the plan's size (feratt's renderer: needs OpenCV and
    scikit-image), about as many samples as the drawn shards would hold."""
    from feratt.config.rendering import preset_config
    from feratt.datasets.bank import build_bank
    from feratt.renderer.render import render

    os.environ["FERATT_CACHE"] = str(work / "cache")  # the embedded backgrounds land here, not in ~
    subjects, per_class = min(plan.subjects, 24), 2 if plan.subjects >= 24 else 1
    jobs = min(plan.jobs, os.cpu_count() or 1)
    bank = build_bank(
        source="builtin:demo",
        out=work / "bank.h5",
        demo_subjects=subjects,
        demo_per_class=per_class,
        jobs=jobs,
    )
    per_face = max(1, round(plan.subjects * plan.per_subject / bank.total))
    config = preset_config(size=plan.size)
    return render(bank=work / "bank.h5", render=out, config=config, per_face=per_face, jobs=jobs).render


def make_data(args: argparse.Namespace, plan: Plan, work: Path, report: Report) -> Path:
    """The shards to read: the given ones, a demo render, or drawn faces."""
    started = time.perf_counter()
    if args.shards is not None:
        shards, kind = args.shards, "given"
    else:
        shards, kind = work / "render", "demo render"
        try:
            importlib.import_module("feratt.renderer.render")
            importlib.import_module("feratt.datasets.bank")
        except ImportError as exc:
            kind = "drawn stripes (numpy)"
            report.skip(
                "demo render", f"the renderer needs {exc.name}, which is missing: drawn faces instead"
            )
        if kind == "demo render":
            demo_render(shards, work, plan)
        else:
            pattern_render(shards, plan.subjects, plan.per_subject, plan.size)
    index = RenderSet.open(shards).index
    report.data["data"] = {
        "kind": kind,
        "path": str(shards),
        "samples": index.totals.samples,
        "subjects": len(index.subjects),
        "size": index.render_config.size,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"data: {kind}, {index.totals.samples} samples, {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return shards


def _peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def throughput(method: str, compiled: bool, plan: Plan, device: torch.device) -> dict[str, Any]:
    """Images/s of training steps on one random batch, and the peak memory."""
    _reset_peak(device)
    started = time.perf_counter()
    times = step_times(
        method, plan.size, plan.width, plan.batch, plan.steps, device, plan.amp, device.type == "cuda",
        compiled, warmup=plan.warmup,
    )  # fmt: skip
    median = statistics.median(times)
    return {
        "method": method,
        "compile": compiled,
        "size": plan.size,
        "width": plan.width,
        "batch": plan.batch,
        "amp": plan.amp,
        "channels_last": device.type == "cuda",
        "ms_per_step": round(median, 2),
        "images_per_s": round(plan.batch * 1000 / median, 1),
        "peak_memory_mib": _peak_mib(device),
        "seconds_with_warmup": round(time.perf_counter() - started, 1),
    }


def loader_wait(method: str, workers: int, refs: list, plan: Plan, device: torch.device) -> dict[str, Any]:
    """Steps fed by the shard loader: the share of their time spent waiting for the next batch."""
    step = TrainStep(method, plan.size, plan.width, device, plan.amp, device.type == "cuda")
    stream, loader = stream_loader(
        refs, plan.batch, workers, pin_memory=device.type == "cuda", drop_last=True
    )
    waited = total = 0.0
    samples = steps = epoch = 0
    while steps < plan.warmup + plan.loader_steps:
        stream.set_epoch(epoch)
        epoch += 1
        before = steps
        clock = time.perf_counter()
        for raw in loader:
            fetched = time.perf_counter()
            batch = normalise_batch(raw, device)
            inputs, target = prepare_inputs(batch, step.config)
            step(inputs, target, batch["label"])
            synchronize(device)
            done = time.perf_counter()
            if steps >= plan.warmup:  # the first batches wait for workers to start and check sha256s
                waited, total, samples = waited + fetched - clock, total + done - clock, samples + len(inputs)
            steps += 1
            clock = time.perf_counter()
            if steps >= plan.warmup + plan.loader_steps:
                break
        if steps == before:
            raise RuntimeError(f"the shards hold less than one batch of {plan.batch}")
    del loader
    return {
        "method": method,
        "workers": workers,
        "steps": plan.loader_steps,
        "wait_share": round(waited / total, 3),
        "images_per_s": round(samples / total, 1),
    }


def _attempt(report: Report, budget: float | None, what: str, measure: Any) -> dict[str, Any] | None:
    """`measure()`, unless the time budget is spent; an error is recorded, and the next row goes on."""
    if budget is not None and report.elapsed() > budget:
        report.skip(what, f"the time budget of {budget:.0f} s is spent")
        return None
    try:
        row = measure()
    except Exception as exc:  # a row that fails (out of memory, say) must not cost the others
        report.skip(what, f"{type(exc).__name__}: {exc}")
        return None
    print(f"{what}: {json.dumps(row)}", flush=True)
    return row


def real_run(method: str, shards: Path, work: Path, plan: Plan, device: torch.device) -> dict[str, Any]:
    """A few epochs through feratt's training API; whether every loss fell and accuracy beat chance."""
    from feratt.config.training import TrainConfig
    from feratt.training.train import train

    options = {
        "preset": "cpu-small", "method": method, "epochs": plan.run_epochs, "batch_size": plan.run_batch,
        "workers": plan.run_workers, "amp": plan.run_amp or plan.amp, "fold_size": plan.run_fold_size,
        "val_subjects": 1 if plan.run_fold_size < 4 else 2, "max_batches": plan.run_max_batches,
    }  # fmt: skip
    started = time.perf_counter()
    result = train(
        render=shards,
        run=work / "runs" / method,
        config=TrainConfig.from_options(options),
        folds="0",
        device=device,
    )
    records = FoldFolder(work / "runs" / method / "fold-0").records()
    first, last = records[0]["train"], records[-1]["train"]
    chance = 1 / len(result.classes)
    losses = sorted(key for key in first if key.startswith("loss_"))
    falls = {key: last[key] < first[key] for key in losses}
    return {
        "method": method,
        "epochs": len(records),
        "seconds": round(time.perf_counter() - started, 1),
        "loss_first": {key: round(first[key], 4) for key in losses},
        "loss_last": {key: round(last[key], 4) for key in losses},
        "losses_fall": all(falls.values()),
        "train_accuracy": [round(r["train"]["accuracy"], 3) for r in records],
        "test_accuracy": round(records[-1]["test"]["accuracy"], 3),
        "chance": round(chance, 3),
        "above_chance": records[-1]["test"]["accuracy"] > chance,
    }


def measure(args: argparse.Namespace, plan: Plan, device: torch.device, work: Path, report: Report) -> None:
    """Every section in turn, the report saved after each."""
    methods = args.methods or list(METHODS)
    report.data["environment"] = environment(device, plan)
    print("environment: " + json.dumps(report.data["environment"]), flush=True)
    report.data["plan"] = dataclasses.asdict(plan)
    report.save()
    shards = make_data(args, plan, work, report)
    render = RenderSet.open(shards)
    refs = render.shards(sorted(render.subjects))
    seconds, samples = timed(lambda: plain_read([ref.path for ref in refs]))
    report.data["plain_h5py_read_samples_per_s"] = round(samples / seconds)
    report.save()
    budget = args.budget
    rows = [
        _attempt(report, budget, f"throughput {m}", lambda m=m: throughput(m, False, plan, device))
        for m in methods
    ]
    report.data["throughput"] = [row for row in rows if row]
    report.save()
    report.data["loader"] = []
    for method in methods:
        for workers in plan.workers:
            row = _attempt(
                report, budget, f"loader {method}, {workers} workers",
                lambda m=method, w=workers: loader_wait(m, w, refs, plan, device),
            )  # fmt: skip
            if row:
                report.data["loader"].append(row)
        report.save()
    report.data["real_run"] = []
    for method in methods if plan.real_run else []:
        row = _attempt(
            report, budget, f"real run {method}", lambda m=method: real_run(m, shards, work, plan, device)
        )
        if row:
            report.data["real_run"].append(row)
        report.save()
    if not plan.real_run:
        report.skip("real runs", "not asked (--no-real-run)")
    if not plan.compile:
        report.skip("throughput with torch.compile", "not asked (--smoke or --no-compile)")
    else:
        for method in methods:
            row = _attempt(
                report,
                budget,
                f"throughput {method} compiled",
                lambda m=method: throughput(m, True, plan, device),
            )
            if row:
                report.data["throughput"].append(row)
            report.save()


def checks(report: Report, plan: Plan, methods: list[str]) -> list[str]:
    """What failed: a method without its real run, a loss that did not fall, accuracy at chance or under."""
    runs = {row["method"]: row for row in report.data.get("real_run", [])}
    failures = [f"{m}: no real run" for m in methods if m not in runs and plan.real_run]
    for method, row in runs.items():
        if not row["losses_fall"]:
            failures.append(f"{method}: a loss did not fall ({row['loss_first']} -> {row['loss_last']})")
        if not row["above_chance"]:
            failures.append(
                f"{method}: test accuracy {row['test_accuracy']} is not above chance {row['chance']}"
            )
    report.data["checks"] = {"failures": failures, "passed": not failures, "enforced": plan.enforce}
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes on the CPU, in seconds (CI).")
    parser.add_argument("--out", type=Path, help="Write the JSON report here.")
    parser.add_argument("--shards", type=Path, help="A render folder to read (default: make one).")
    parser.add_argument(
        "--work", type=Path, help="Folder for the shards and runs (default: a temporary one)."
    )
    parser.add_argument("--device", help="Default: cuda, or cpu with --smoke.")
    parser.add_argument("--methods", type=lambda text: text.split(","), help="Comma-separated methods.")
    parser.add_argument("--budget", type=float, default=270.0, help="Skip what is left after this many s.")
    parser.add_argument("--no-compile", action="store_true", help="Skip the torch.compile rows.")
    parser.add_argument(
        "--no-real-run",
        action="store_true",
        help="Skip the real runs (bench/gpu_run.sh trains through the CLI).",
    )
    args = parser.parse_args()
    plan = SMOKE if args.smoke else Plan()
    if args.smoke and args.device and args.device.startswith("cuda"):
        plan = dataclasses.replace(plan, amp="auto")  # bf16 is for exercising CPU autocast
    if args.no_compile:
        plan = dataclasses.replace(plan, compile=False)
    if args.no_real_run:
        plan = dataclasses.replace(plan, real_run=False)
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: torch sees no CUDA device; run on a GPU machine, or with --smoke", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as training sets it
    report = Report(args.out, "smoke" if args.smoke else "full")
    work = args.work or Path(tempfile.mkdtemp(prefix="feratt-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        measure(args, plan, device, work, report)
    finally:
        failures = checks(report, plan, args.methods or list(METHODS))
        report.save()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    verdict = "passed" if not failures else "FAILED: " + "; ".join(failures)
    print(f"checks{'' if plan.enforce else ' (reported, not enforced in --smoke)'}: {verdict}", flush=True)
    print(f"{report.elapsed():.1f} s" + (f"; wrote {args.out}" if args.out else ""), flush=True)
    return 1 if failures and plan.enforce else 0


if __name__ == "__main__":
    sys.exit(main())
