"""Where training runs: the torch device, and this process's place in a torchrun job."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from feratt.errors import FerattError


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """The device `name` names; 'auto' is CUDA when there is one, else the CPU."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FerattError(f"{name} asked for, but torch sees no CUDA device", field="device")
    try:
        return torch.device(name)
    except RuntimeError:
        raise FerattError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N", field="device") from None


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this is the process that writes files and logs."""
        return self.rank == 0

    def device_for(self, device: torch.device) -> torch.device:
        """This rank's own GPU when the job runs on CUDA, else `device`."""
        if self.world_size > 1 and device.type == "cuda":
            return torch.device(f"cuda:{self.local_rank}")
        return device

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over every rank, in place."""
        if self.world_size > 1:
            dist.all_reduce(values)
        return values

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world_size > 1:
            dist.barrier()

    def agree(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's `flag`, on every rank, so that all ranks take the same branch."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([int(flag)], device=device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def on_main(self, action: Callable[[], Any], device: torch.device) -> None:
        """Run `action` on rank 0 alone; if it fails there, every rank raises, and none waits forever."""
        failure: Exception | None = None
        if self.main:
            try:
                action()
            except Exception as exc:  # the other ranks must hear of it before rank 0 raises
                failure = exc
        if not self.agree(failure is None, device):
            if failure is not None:
                raise failure
            raise FerattError(f"rank {self.rank}: rank 0 stopped (its output says why)")

    def shutdown(self) -> None:
        """Leave the process group (gloo's threads left running at interpreter exit abort the process)."""
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


#: A process training alone.
SINGLE_PROCESS = Distributed()


def setup_distributed(device: torch.device | None = None) -> Distributed:
    """Join the process group torchrun describes in the environment, if any: NCCL for a CUDA `device`
    (by default, when there is CUDA), gloo otherwise."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return Distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)  # NCCL's collectives run on the current device
        dist.init_process_group("nccl" if cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


@contextlib.contextmanager
def distributed_job(device: torch.device | None = None) -> Iterator[Distributed]:
    """This process's place in the torchrun job for the block: joins the process group if it has not
    joined yet, and then leaves it after the block (a caller that joined keeps it)."""
    was_joined = dist.is_available() and dist.is_initialized()
    place = setup_distributed(device)
    try:
        yield place
    finally:
        if not was_joined:
            place.shutdown()
