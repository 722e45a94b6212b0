"""JSON files as feratt writes and reads them: sorted, indented, written atomically, read as data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from feratt.atomic import atomic_write_bytes
from feratt.errors import FerattError


def dumps(payload: Any) -> str:
    """`payload` as feratt's JSON text: sorted keys, two-space indent, a final newline."""
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write `payload` to `path` atomically."""
    atomic_write_bytes(path, dumps(payload).encode())


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value in `path`; FerattError naming the file when it cannot be read or parsed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FerattError(f"cannot read {path}: {exc}") from None
