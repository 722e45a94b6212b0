"""Where training runs: the torch device, and this process's place in a torchrun job."""

from __future__ import annotations

import os
from dataclasses import dataclass

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

    def shutdown(self) -> None:
        """Leave the process group (gloo's threads left running at interpreter exit abort the process)."""
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


#: A process training alone.
SINGLE_PROCESS = Distributed()


def setup_distributed() -> Distributed:
    """Join the process group torchrun describes in the environment, if any."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
