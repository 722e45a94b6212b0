"""The library versions feratt runs with, and how they compare with a lock file (constraints.txt).

`python -m feratt.environment [--lock constraints.txt]` prints one line of the libraries that decide
feratt's pixels and numbers, then whether every package the lock pins is installed at its version.
`make test` starts with it, so a failure report shows what it ran with.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path

#: The libraries whose releases can change feratt's bytes and figures, in the order they are printed.
KEY_LIBRARIES: tuple[str, ...] = (
    "numpy",
    "opencv-python-headless",
    "torch",
    "scikit-image",
    "scipy",
    "pillow",
    "h5py",
    "scikit-learn",
    "onnxruntime",
    "dlib-bin",
)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


@dataclass(frozen=True)
class LockDifference:
    """A package the lock pins that is installed at another version, or not at all (`installed` None)."""

    name: str
    locked: str
    installed: str | None


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def read_lock(path: str | Path) -> dict[str, str]:
    """The `name==version` pins of a constraints file, by canonical name (comments and options skipped)."""
    pins: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def _same_release(installed: str, locked: str) -> bool:
    # A local build label (torch's "+cpu") is the same release as the lock's bare version.
    return installed == locked or installed.split("+", 1)[0] == locked


def lock_differences(pins: dict[str, str]) -> list[LockDifference]:
    """The pinned packages whose installed version is not the pinned one, sorted by name."""
    installed = {canonical(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}
    return [
        LockDifference(name, locked, installed.get(name))
        for name, locked in sorted(pins.items())
        if name not in installed or not _same_release(installed[name], locked)
    ]


def versions_line() -> str:
    """Python and the key libraries' versions, on one line."""
    parts = [f"Python {platform.python_version()}"]
    parts += [f"{name} {installed_version(name) or 'absent'}" for name in KEY_LIBRARIES]
    return "; ".join(parts)


def lock_line(path: Path, differences: list[LockDifference], pinned: int) -> str:
    """One line saying whether the environment matches the lock, and where it does not."""
    if not differences:
        return f"all {pinned} packages pinned by {path} are installed at their pinned versions"
    shown = ", ".join(f"{d.name} {d.installed or 'absent'} (locked {d.locked})" for d in differences)
    return f"{len(differences)} of {pinned} packages differ from {path}: {shown}"


def main(argv: list[str] | None = None) -> int:
    """Print the versions line and, given a lock, the comparison; exit 1 on a difference with --strict."""
    parser = argparse.ArgumentParser(prog="python -m feratt.environment", description=__doc__)
    parser.add_argument("--lock", type=Path, help="a constraints file of name==version pins")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a pinned package differs")
    args = parser.parse_args(argv)
    print(versions_line())
    if args.lock is None:
        return 0
    pins = read_lock(args.lock)
    differences = lock_differences(pins)
    print(lock_line(args.lock, differences, len(pins)))
    return 1 if differences and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
