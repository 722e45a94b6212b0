"""Where feratt keeps what it builds for its embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$FERATT_CACHE, else $XDG_CACHE_HOME/feratt, else ~/.cache/feratt."""
    if os.environ.get("FERATT_CACHE"):
        return Path(os.environ["FERATT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "feratt"
