"""Training step time on the CPU: forward + backward + Adam step, milliseconds per batch, each method.

Runs every method (baseline, feratt-cls, feratt-rep-cls) at 64 and 128 px, at the paper's widths and
at the cpu-small preset's, on random batches with the loss terms of the method. With CUDA present it
also times the GPU with and without AMP and channels_last.

    .venv/bin/python bench/train_step_bench.py --batch 8 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from feratt.training.config import TrainConfig
from feratt.training.losses import compute_losses
from feratt.training.methods import METHODS, build_model, get_method, loss_config

NUM_CLASSES = 7


def step_times(
    method: str,
    size: int,
    width: float,
    batch: int,
    steps: int,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
) -> list[float]:
    config = TrainConfig(method=method, in_size=size, width=width).resolved()
    torch.manual_seed(0)
    model = build_model(config, NUM_CLASSES).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
    images = torch.rand(batch, 3, size, size, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.rand(batch, 3, size, size, device=device)
    labels = torch.arange(batch, device=device) % NUM_CLASSES
    settings = loss_config(config)
    terms = get_method(method).terms
    times = []
    for step in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        context = (
            torch.autocast("cuda", dtype=torch.bfloat16) if amp else torch.autocast("cpu", enabled=False)
        )
        with context:
            output = model(images, target=targets)
            losses = compute_losses(terms, output, targets, labels, NUM_CLASSES, settings)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # the first steps warm up allocators and kernels
            times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"median of {args.steps} steps after 2 warm-up steps"
    )
    print()
    print("| device | method | input | width | ms per batch | images/s |")
    print("|---|---|---|---|---|---|")
    settings = [
        ("cpu", 64, 0.25, False, False),
        ("cpu", 64, 1.0, False, False),
        ("cpu", 128, 1.0, False, False),
    ]
    if torch.cuda.is_available():
        settings += [("cuda", 128, 1.0, amp, cl) for amp in (False, True) for cl in (False, True)]
    for device_name, size, width, amp, channels_last in settings:
        for method in METHODS:
            times = step_times(
                method, size, width, args.batch, args.steps, torch.device(device_name), amp, channels_last
            )
            median = statistics.median(times)
            label = device_name + (" amp" if amp else "") + (" channels_last" if channels_last else "")
            rate = args.batch * 1000 / median
            print(
                f"| {label} | {method} | {size} | {width} | {median:.0f} | {rate:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
