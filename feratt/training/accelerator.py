"""How training uses the accelerator: autocast and float16's gradient scaler (`--amp`), channels_last.

The same code runs on every device type: autocast is `torch.autocast(device.type, dtype=...)`, so CPU
bfloat16 takes the path CUDA takes, and the float16 path (GPUs without bfloat16: V100, T4 and older)
scales the loss with `torch.amp.GradScaler`, whose state travels in the checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch

from feratt.config.training import TrainConfig
from feratt.errors import FerattError


def cuda_bf16_supported() -> bool:
    """Whether the CUDA device computes bfloat16 natively (not emulated, which is slower than float32)."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.3 has no emulation, nor the argument
        return bool(torch.cuda.is_bf16_supported())


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of AMP `mode` (auto, bf16, fp16, off) on `device`; None for float32 throughout."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if cuda_bf16_supported() else torch.float16
    if mode not in ("bf16", "fp16"):
        raise FerattError(f"unknown AMP mode {mode!r}; valid: auto, bf16, fp16, off", field="amp")
    available = getattr(torch.amp, "is_autocast_available", None)  # torch 2.4 and later
    if available is not None and not available(device.type):
        raise FerattError(f"torch has no mixed precision on {device.type}; use --amp off", field="amp")
    if mode == "bf16" and device.type == "cuda" and not cuda_bf16_supported():
        raise FerattError(
            f"{torch.cuda.get_device_name(device)} has no native bfloat16; use --amp fp16 (or auto)",
            field="amp",
        )
    return torch.bfloat16 if mode == "bf16" else torch.float16


def _grad_scaler(device_type: str) -> Any:
    try:
        return torch.amp.GradScaler(device_type)
    except AttributeError:  # torch before 2.3 has a scaler for CUDA only
        if device_type == "cuda":
            return torch.cuda.amp.GradScaler()
        raise FerattError(f"this torch has no fp16 gradient scaler on {device_type}", field="amp") from None


class Precision:
    """A run's numeric precision: its autocast dtype and, for float16, the gradient scaler it keeps."""

    def __init__(self, mode: str, device: torch.device) -> None:
        self.device_type = device.type
        self.dtype = amp_dtype(mode, device)
        # float16's narrow range lets small gradients underflow; bfloat16 has float32's range.
        self.scaler = _grad_scaler(device.type) if self.dtype == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of the forward pass and the losses (none in float32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
        """Backpropagate `loss` and step `optimizer`; False when float16 gradients overflowed and the
        scaler skipped the step (lowering its scale)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale  # update() lowers the scale only after inf gradients

    def state_dict(self) -> dict[str, float] | None:
        """The scaler's state (its scale, factors and counters) for the checkpoint; None without a scaler."""
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: Mapping[str, float] | None) -> None:
        """Restore the scaler's state from a checkpoint (a checkpoint without one leaves it fresh)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Whether the run lays tensors out channels_last: asked for, and on CUDA, where tensor cores gain."""
    return config.channels_last and device.type == "cuda"
