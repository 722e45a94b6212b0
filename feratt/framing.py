"""How a model's training faces were framed, recorded so that inference frames new faces the same way.

A training face went through two crops: the face bank's (the square around the face mask, padded by the
bank's margin, at the bank's size) and the render's (the whole bank crop, or with `fit_mask` the square
around the mask padded by that fraction, at the render's size). The render writes this record into its
index.json, training copies it into every checkpoint, and `feratt export` into the ONNX metadata.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

from feratt.errors import FerattError

#: The face bank's defaults (BankOptions), what a render or checkpoint without the record falls back to.
DEFAULT_BANK_SIZE = 160
DEFAULT_BANK_MARGIN = 0.2


@dataclass(frozen=True)
class Framing:
    """The bank's crop and the render's framing of the faces a model was trained on."""

    bank_size: int = DEFAULT_BANK_SIZE  # side of the face bank's crops
    bank_margin: float = DEFAULT_BANK_MARGIN  # the bank's margin around the mask box, of its longer side
    size: int = 128  # side of the rendered samples
    fit_mask: float | None = None  # the render's --fit-mask: None, the whole bank crop fills the frame
    grey: bool = False  # the render turned faces grey
    recorded: bool = True  # False: not recorded where the model came from; these are the defaults

    def __post_init__(self) -> None:
        sizes_ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.bank_size, self.size))
        if not sizes_ok or self.bank_size < 1 or self.size < 1:
            raise FerattError(f"framing sizes must be positive integers, not {self.bank_size}, {self.size}")
        margins = [self.bank_margin] + ([] if self.fit_mask is None else [self.fit_mask])
        if not all(isinstance(m, int | float) and math.isfinite(m) and m >= 0 for m in margins):
            raise FerattError(f"framing margins must be numbers >= 0, not {margins}")

    def to_dict(self) -> dict[str, Any]:
        """The record as index.json, checkpoints and ONNX metadata keep it."""
        data = asdict(self)
        del data["recorded"]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Framing:
        """The record from `to_dict`'s dict; a FerattError when it is not one."""
        names = {f.name for f in fields(cls)} - {"recorded"}
        if not isinstance(data, dict) or set(data) != names:
            raise FerattError(f"not a framing record (expected the keys {', '.join(sorted(names))})")
        return cls(**data)

    def describe(self) -> str:
        """One line: how faces are framed."""
        fit = "the whole bank crop" if self.fit_mask is None else f"the mask box padded by {self.fit_mask}"
        grey = ", grey" if self.grey else ""
        bank = f"bank crop {self.bank_size} px with margin {self.bank_margin}"
        return f"{bank}, then {fit} at {self.size} px{grey}"


def defaults(size: int) -> Framing:
    """The framing assumed when none is recorded: the bank's defaults, the whole crop at `size`."""
    return Framing(size=int(size), recorded=False)


def bank_framing(path: str | os.PathLike[str]) -> tuple[int, float] | None:
    """(face size, margin) that a face bank file records; None when it cannot be read."""
    try:
        import h5py

        with h5py.File(path, "r") as bank:
            return int(bank.attrs["face_size"]), float(bank.attrs["margin"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def render_record(render_config: dict[str, Any], bank: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The framing record of a render of `bank` with `render_config` (RenderConfig.to_dict()), for index.json.

    A bank that cannot be read (moved since) leaves the bank's defaults, and says so.
    """
    found = bank_framing(bank) if bank else None
    bank_size, bank_margin = found or (DEFAULT_BANK_SIZE, DEFAULT_BANK_MARGIN)
    framing = Framing(
        bank_size=bank_size,
        bank_margin=bank_margin,
        size=int(render_config["size"]),
        fit_mask=render_config.get("fit_mask"),
        grey=bool(render_config.get("grey", False)),
    )
    return {**framing.to_dict(), "bank_read": found is not None}


def from_index(index: dict[str, Any]) -> Framing:
    """The framing of a render from its index.json; one made before the record existed: from its config."""
    record = index.get("framing")
    if isinstance(record, dict):
        return Framing.from_dict({k: v for k, v in record.items() if k != "bank_read"})
    config = index.get("render_config") or {}
    return Framing(
        size=int(config.get("size", 128)), fit_mask=config.get("fit_mask"), grey=bool(config.get("grey"))
    )


def from_checkpoint(record: Any, in_size: int, where: str) -> Framing:
    """The framing a checkpoint (or model file) records; the defaults, with a warning, when it has none."""
    if record is None:
        warnings.warn(
            f"{where} does not record how its training faces were framed (made before feratt recorded "
            f"it): assuming the face bank's defaults ({defaults(in_size).describe()}); pass the render "
            "it was trained on (--render) to frame faces as it did",
            UserWarning,
            stacklevel=2,
        )
        return defaults(in_size)
    try:
        return Framing.from_dict(record)
    except (FerattError, TypeError) as exc:
        raise FerattError(f"{where} holds a bad framing record: {exc}") from None
