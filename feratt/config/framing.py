"""How a model's training faces were framed, recorded so that inference frames new faces the same way.

A training face went through two crops: the face bank's (for an aligned bank, the square around its 68
landmarks with the eyes levelled, padded by the bank's margin; otherwise the square around the face
mask, padded alike; at the bank's size) and the render's (the whole bank crop, or with `fit_mask` the square
around the mask padded by that fraction, at the render's size). The render writes this record into its
index.json, training copies it into every checkpoint, and `feratt export` into the ONNX metadata.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from feratt.codec import TRANSIENT, decode
from feratt.config.limits import MAX_IMAGE_SIDE, MAX_MARGIN
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
    aligned: bool = False  # the bank cut most faces out by their landmarks, eyes levelled
    bank_forehead: float = 0.0  # the bank's --forehead: the mask's raise above the brows
    # False: not recorded where the model came from; these are the defaults. Never written.
    recorded: bool = field(default=True, metadata=TRANSIENT)

    def __post_init__(self) -> None:
        sizes = (self.bank_size, self.size)
        sizes_ok = all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_IMAGE_SIDE for v in sizes
        )
        if not sizes_ok:
            raise FerattError(f"framing sizes must be whole numbers from 1 to {MAX_IMAGE_SIDE}, not {sizes}")
        margins = [self.bank_margin, self.bank_forehead] + ([] if self.fit_mask is None else [self.fit_mask])
        if not all(isinstance(m, int | float) and math.isfinite(m) and 0 <= m <= MAX_MARGIN for m in margins):
            raise FerattError(f"framing margins must be numbers from 0 to {MAX_MARGIN:g}, not {margins}")

    def describe(self) -> str:
        """One line: how faces are framed."""
        fit = "the whole bank crop" if self.fit_mask is None else f"the mask box padded by {self.fit_mask}"
        grey = ", grey" if self.grey else ""
        how = "aligned by landmarks" if self.aligned else "around the mask"
        bank = f"bank crop {self.bank_size} px {how} with margin {self.bank_margin}"
        return f"{bank}, then {fit} at {self.size} px{grey}"


def defaults(size: int) -> Framing:
    """The framing assumed when none is recorded: the bank's defaults, the whole crop at `size`."""
    return Framing(size=int(size), recorded=False)


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
    names = {f.name for f in fields(Framing)} - {"recorded"}
    # Records written before feratt knew landmark alignment lack these two: their banks were not aligned.
    optional = {"aligned", "bank_forehead"}
    if not isinstance(record, dict) or not names - optional <= set(record) <= names:
        expected = ", ".join(sorted(names))
        raise FerattError(
            f"{where} holds a bad framing record: not a framing record (expected the keys {expected})"
        )
    return decode(Framing, record, f"{where} (its framing record)")
