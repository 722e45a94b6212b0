"""Typed requests: each API call takes a frozen dataclass, or the same fields as keyword arguments.

Each request checks its fields on construction (`check_fields`, against the dataclass's type hints, then
its own range rules), so that a bad value is a FerattError naming the field, not a TypeError ten frames
deep.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from feratt.errors import FerattError

RequestT = TypeVar("RequestT")

#: The largest seed: every random generator feratt seeds (NumPy's, torch's) takes 0 to this.
MAX_SEED = 2**32 - 1


def request_from(cls: type[RequestT], request: RequestT | None, fields: Mapping[str, object]) -> RequestT:
    """`request` with `fields` replaced, or a new `cls(**fields)` when no request is given."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(fields) - known)
    if unknown:
        raise FerattError(
            f"{cls.__name__} has no field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    if request is None:
        return cls(**fields)
    if not isinstance(request, cls):
        raise FerattError(f"expected a {cls.__name__}, got {type(request).__name__}")
    return dataclasses.replace(request, **fields) if fields else request  # type: ignore[type-var]


def check_seed(seed: int, field: str = "seed") -> None:
    """FerattError unless `seed` lies between 0 and MAX_SEED."""
    if not 0 <= seed <= MAX_SEED:
        raise FerattError(f"the seed must be a whole number from 0 to {MAX_SEED}, not {seed}", field=field)


def check_jobs(jobs: int, field: str = "jobs") -> None:
    """FerattError for 0 workers; a negative count means what it means to joblib (-1 all cores, -2 all but
    one, ..., never fewer than 1)."""
    if jobs == 0:
        raise FerattError(
            "the number of parallel workers must not be 0 (1 or more; -1: all cores, -2: all but one, ...)",
            field=field,
        )


class _Mismatch(Exception):
    """A value that does not have the type its place asks for: what that place takes, and where it is."""

    def __init__(self, expected: str, value: object, where: str = "") -> None:
        super().__init__(expected)
        self.expected, self.value, self.where = expected, value, where


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(request: object) -> None:
    """Check every field of the frozen dataclass `request` against its type hint; FerattError naming the
    first that does not fit. An int stands for a float, a list for a tuple, and a str for a Path (each
    stored as the field's type: a tuple, a Path, a plain int)."""
    hints = _hints(type(request))
    for field in dataclasses.fields(request):  # type: ignore[arg-type]
        value = getattr(request, field.name)
        try:
            fitted = _fit(hints[field.name], value)
        except _Mismatch as exc:
            raise FerattError(
                f"{field.name}{exc.where} must be {exc.expected}, not {_shown(exc.value)}", field=field.name
            ) from None
        if fitted is not value:
            object.__setattr__(request, field.name, fitted)


def _shown(value: object) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text if value is None or isinstance(value, bool) else f"{text} ({type(value).__name__})"


_NAMES: dict[Any, tuple[str, str]] = {
    int: ("a whole number", "whole numbers"),
    float: ("a number", "numbers"),
    bool: ("True or False", "True or False"),
    str: ("a string", "strings"),
    Path: ("a path", "paths"),
    type(None): ("None", "None"),
}


def _describe(hint: Any, plural: bool = False) -> str:
    """What a value of type `hint` is, in words: 'a whole number', 'a path or None', 'a tuple of strings'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if str in args and any(typing.get_origin(a) is os.PathLike for a in args):
            args = tuple(a for a in args if a is not str and typing.get_origin(a) is not os.PathLike)
            args = (os.PathLike, *args)
        return " or ".join(dict.fromkeys(_describe(a, plural) for a in args))
    if hint is os.PathLike or origin is os.PathLike:
        return "paths (str or os.PathLike)" if plural else "a path (str or os.PathLike)"
    if origin in (tuple, list, collections.abc.Sequence):
        noun = "a tuple" if origin is tuple else "a list" if origin is list else "a list or tuple"
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"{noun} of {len(args)} values ({', '.join(_describe(a) for a in args)})"
        return f"{noun} of {_describe(args[0], plural=True)}" if args else noun
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if hint in _NAMES:
        return _NAMES[hint][plural]
    name = getattr(origin or hint, "__name__", str(hint))
    return f"{name}s" if plural else f"{'an' if name[:1] in 'AEIOUaeiou' else 'a'} {name}"


def _fit(hint: Any, value: Any) -> Any:
    """`value` as a value of type `hint` (normalised: a tuple for a list, a Path for a str); _Mismatch if
    it cannot be one."""
    origin = typing.get_origin(hint)
    if hint is Any or hint is object or isinstance(hint, TypeVar | str | typing.ForwardRef):
        return value
    if origin in (typing.Union, types.UnionType):
        return _fit_union(hint, value)
    if origin in (tuple, list, collections.abc.Sequence):
        return _fit_sequence(hint, value)
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise _Mismatch(_describe(hint), value)
    if hint is os.PathLike or origin is os.PathLike:
        if isinstance(value, os.PathLike):
            return value
        raise _Mismatch(_describe(hint), value)
    if origin is collections.abc.Callable:
        if callable(value):
            return value
        raise _Mismatch("a function", value)
    if origin is not None:
        hint = origin  # dict[str, int] and the like: the container's type alone
    return _fit_scalar(hint, value)


def _fit_scalar(hint: Any, value: Any) -> Any:
    if hint is type(None):
        ok = value is None
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        value = int(value) if ok and type(value) is not int else value
    elif hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _Mismatch("a finite number", value)
            return value if isinstance(value, int | float) else float(value)
        ok = False
    elif hint is Path:
        ok = isinstance(value, str | os.PathLike)
        value = Path(value) if ok and not isinstance(value, Path) else value
    elif isinstance(hint, type):
        ok = isinstance(value, hint)
    else:
        return value  # a typing construct this check does not know: taken as it is
    if not ok:
        raise _Mismatch(_describe(hint), value)
    return value


def _fit_union(hint: Any, value: Any) -> Any:
    options = typing.get_args(hint)
    if value is None:
        if type(None) in options:
            return None
        raise _Mismatch(_describe(hint), value)
    kinds = [option for option in options if option is not type(None)]
    for kind in kinds:
        try:
            return _fit(kind, value)
        except _Mismatch as exc:
            if len(kinds) == 1 and exc.where:  # a list item of the only kind: say which item
                raise _Mismatch(exc.expected, exc.value, exc.where) from None
    raise _Mismatch(_describe(hint), value)


def _fit_sequence(hint: Any, value: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(value, str | bytes) or not isinstance(value, collections.abc.Sequence):
        raise _Mismatch(_describe(hint), value)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _Mismatch(_describe(hint), value)
        kinds = list(args)
    else:
        kinds = [args[0] if args else Any] * len(value)
    items = []
    for index, (kind, item) in enumerate(zip(kinds, value, strict=True)):
        try:
            items.append(_fit(kind, item))
        except _Mismatch as exc:
            raise _Mismatch(exc.expected, exc.value, f"[{index}]{exc.where}") from None
    fitted = items if origin is list else tuple(items)
    same = type(fitted) is type(value) and all(a is b for a, b in zip(fitted, value, strict=True))
    return value if same else fitted
