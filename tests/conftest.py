"""Settings for the whole suite: torch's CPU threads shared out among pytest-xdist's workers.

`pytest -n 2` on two cores runs two processes whose torch would each start a thread per core: four busy
threads on two cores. OpenMP's threads then wait on each other at every operator (a descheduled thread
holds up the other for a time slice), so that a training step takes 10 to 100 times as long as with one
thread. Each worker, and each process it starts (they inherit OMP_NUM_THREADS), gets its share of the
cores instead. Without xdist, or where OMP_NUM_THREADS is set already, nothing changes.
"""

from __future__ import annotations

import os

import torch


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    _threads = max(1, _cores() // _workers)
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(_threads))
    torch.set_num_threads(_threads)
