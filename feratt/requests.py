"""Typed requests: each API call takes a frozen dataclass, or the same fields as keyword arguments."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypeVar

from feratt.errors import FerattError

RequestT = TypeVar("RequestT")


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
        raise TypeError(f"expected a {cls.__name__}, got {type(request).__name__}")
    return dataclasses.replace(request, **fields) if fields else request  # type: ignore[type-var]
