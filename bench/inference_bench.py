"""CPU inference throughput: images per second at batch 1 and 32, torch against onnxruntime.

For the baseline and FERAtt (feratt-cls; feratt-rep-cls runs the same network at inference) at both
presets (cpu-small: 64 px, a quarter of the widths; paper: 128 px, full widths), an untrained model
(speed does not depend on the weights) is saved as a checkpoint, exported with `feratt export`, and
run on random faces through `feratt.inference.backends` both ways: torch (inference mode, float32)
and onnxruntime's CPU provider. Both get --threads threads. Each figure is the median of --repeats
passes of --calls calls at batch 1, or of --calls / 4 calls (at least 2) at batch 32, after a warm-up
call; the ratio is onnxruntime's images/s over torch's. The model only: no detection or framing.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python bench/inference_bench.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from feratt.config.framing import Framing
from feratt.config.training import TrainConfig
from feratt.datasets.demo import DEMO_CLASSES
from feratt.inference.backends import open_model
from feratt.inference.export import export_onnx
from feratt.training.build import build_model
from feratt.training.checkpoints import epoch_checkpoint


def make_models(work: Path, method: str, preset: str, threads: int):
    config = TrainConfig(method=method, preset=preset).resolved()
    torch.manual_seed(0)
    model = build_model(config, len(DEMO_CLASSES))
    saved = epoch_checkpoint(
        config, list(DEMO_CLASSES), 0, 0, 0.0, model, torch.optim.Adam(model.parameters()),
        Framing(size=config.in_size),
    )  # fmt: skip
    checkpoint = work / f"{method}-{preset}.pt"
    saved.save(checkpoint)
    exported = export_onnx(checkpoint=checkpoint, out=work / f"{method}-{preset}.onnx")
    by_torch = open_model(checkpoint, device="cpu")
    by_onnx = open_model(exported.path)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    by_onnx.session = onnxruntime.InferenceSession(
        str(exported.path), options, providers=["CPUExecutionProvider"]
    )
    return config.in_size, by_torch, by_onnx


def images_per_second(model, faces: np.ndarray, calls: int, repeats: int) -> float:
    model.batch_size = len(faces)
    model(faces)  # warm-up
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            model(faces)
        rates.append(calls * len(faces) / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print("| model | preset | batch | torch images/s | onnxruntime images/s | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("baseline", "feratt-cls"):
            for preset in ("cpu-small", "paper"):
                size, by_torch, by_onnx = make_models(Path(tmp), method, preset, args.threads)
                for batch in (1, 32):
                    faces = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
                    calls = args.calls if batch == 1 else max(2, args.calls // 4)
                    rate_torch = images_per_second(by_torch, faces, calls, args.repeats)
                    rate_onnx = images_per_second(by_onnx, faces, calls, args.repeats)
                    print(
                        f"| {method} | {preset} | {batch} | {rate_torch:.1f} | {rate_onnx:.1f} | "
                        f"{rate_onnx / rate_torch:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
