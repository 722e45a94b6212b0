"""What each worker process that feratt starts (joblib's loky workers) does first."""

from __future__ import annotations

import signal


def ignore_interrupts() -> None:
    """Leave Ctrl-C to the main process: it stops the workers and says in one line what was kept (a
    worker's own KeyboardInterrupt would only add a traceback to the terminal)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
