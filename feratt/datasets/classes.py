"""The canonical expression classes and the name aliases every reader accepts."""

from __future__ import annotations

from collections.abc import Iterable

from feratt.errors import FerattError

#: One class order for every data set; a data set lacking some classes keeps this order without them.
CANONICAL_CLASSES: tuple[str, ...] = (
    "neutral",
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happy",
    "sadness",
    "surprise",
)

#: The seven basic expressions and neutral, without contempt: BU-3DFE, JAFFE and the demo set.
SEVEN_CLASSES: tuple[str, ...] = tuple(c for c in CANONICAL_CLASSES if c != "contempt")

#: The two-letter expression codes in BU-3DFE and JAFFE file names, and the classes they stand for.
EXPRESSION_CODES: dict[str, str] = {
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sadness",
    "SU": "surprise",
}

#: Spellings found in circulated copies of the data sets, mapped to the canonical names.
CLASS_ALIASES: dict[str, str] = {
    "neutral": "neutral",
    "anger": "anger",
    "angry": "anger",
    "contempt": "contempt",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "happy": "happy",
    "happiness": "happy",
    "sad": "sadness",
    "sadness": "sadness",
    "surprise": "surprise",
    "surprised": "surprise",
}


def canonical_name(name: str) -> str:
    """Return the canonical class name for `name`, or raise FerattError listing the valid ones."""
    key = name.strip().lower()
    if key not in CLASS_ALIASES:
        valid = ", ".join(sorted(CLASS_ALIASES))
        raise FerattError(f"unknown class name {name!r}; valid names: {valid}")
    return CLASS_ALIASES[key]


def ordered_classes(names: Iterable[str]) -> tuple[str, ...]:
    """Return the canonical names among `names` in canonical order."""
    present = {canonical_name(n) for n in names}
    return tuple(c for c in CANONICAL_CLASSES if c in present)


def expression_class(code: str, path: object) -> str:
    """The class a two-letter expression code in the name of `path` stands for; FerattError if none."""
    if code not in EXPRESSION_CODES:
        valid = ", ".join(f"{c} {name}" for c, name in EXPRESSION_CODES.items())
        raise FerattError(f"{path}: unknown expression code {code!r}; valid codes: {valid}")
    return EXPRESSION_CODES[code]
