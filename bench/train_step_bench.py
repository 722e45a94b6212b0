"""Training step time: forward + backward + Adam step, milliseconds per batch, each method.

Runs every method (baseline, feratt-cls, feratt-rep-cls) at 64 and 128 px, at the paper's widths and
at the cpu-small preset's, on random batches with the loss terms of the method. With CUDA present it
also times the GPU with and without AMP (`--amp auto`: bf16, or fp16 with its gradient scaler) and
channels_last. `TrainStep` and `step_times` are what bench/gpu_check.py times too.

    .venv/bin/python bench/train_step_bench.py --batch 8 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from feratt.config.methods import METHODS, get_method
from feratt.config.training import TrainConfig
from feratt.training.accelerator import Precision
from feratt.training.build import build_model, loss_config
from feratt.training.losses import compute_losses

NUM_CLASSES = 7


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a clock reads its end."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainStep:
    """One forward + backward + Adam step of a method's network, with feratt's autocast and scaler."""

    def __init__(
        self,
        method: str,
        size: int,
        width: float,
        device: torch.device,
        amp: str = "off",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.config = TrainConfig(method=method, in_size=size, width=width, amp=amp).resolved()
        self.channels_last = channels_last
        torch.manual_seed(0)
        model = build_model(self.config, NUM_CLASSES).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile else model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
        self.precision = Precision(amp, device)
        self.settings = loss_config(self.config)
        self.terms = get_method(method).terms

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> dict:
        """Train on one batch (images and attention targets in [0, 1], at the model's size); its losses."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self.precision.autocast():
            output = self.model(images, target=targets)
            losses = compute_losses(self.terms, output, targets, labels, NUM_CLASSES, self.settings)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.step(losses["total"], self.optimizer)
        return losses


def random_batch(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Images, attention targets and labels of one random batch on `device`."""
    images = torch.rand(batch, 3, size, size, device=device)
    targets = torch.rand(batch, 3, size, size, device=device)
    return images, targets, torch.arange(batch, device=device) % NUM_CLASSES


def step_times(
    method: str,
    size: int,
    width: float,
    batch: int,
    steps: int,
    device: torch.device,
    amp: str = "off",
    channels_last: bool = False,
    compile: bool = False,
    warmup: int = 2,
) -> list[float]:
    """Milliseconds of each of `steps` training steps on one random batch, after `warmup` steps."""
    step = TrainStep(method, size, width, device, amp, channels_last, compile)
    images, targets, labels = random_batch(batch, size, device)
    times = []
    for index in range(steps + warmup):
        synchronize(device)
        started = time.perf_counter()
        step(images, targets, labels)
        synchronize(device)
        if index >= warmup:  # the first steps warm up allocators and kernels (and compile)
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
        ("cpu", 64, 0.25, "off", False),
        ("cpu", 64, 1.0, "off", False),
        ("cpu", 128, 1.0, "off", False),
    ]
    if torch.cuda.is_available():
        settings += [("cuda", 128, 1.0, amp, cl) for amp in ("off", "auto") for cl in (False, True)]
    for device_name, size, width, amp, channels_last in settings:
        for method in METHODS:
            times = step_times(
                method, size, width, args.batch, args.steps, torch.device(device_name), amp, channels_last
            )
            median = statistics.median(times)
            label = device_name + (f" amp {amp}" if amp != "off" else "")
            label += " channels_last" if channels_last else ""
            rate = args.batch * 1000 / median
            print(
                f"| {label} | {method} | {size} | {width} | {median:.0f} | {rate:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
