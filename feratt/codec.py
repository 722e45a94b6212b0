"""One codec between frozen dataclasses and JSON values, checked against the dataclasses' type hints.

`encode` turns a dataclass (or a value holding dataclasses, tuples, lists, dicts and paths) into JSON
values: fields in declaration order, tuples as lists, paths as strings. A field's metadata may say
`OMIT_NONE` (left out while it is None), `TRANSIENT` (never written: it describes the object in
memory, not the file) or `json_name(key)` (written under another key, such as a Python keyword).

`decode(cls, data, where)` is the reverse, and the schema check (a class's `upgrade_record(data)`, if
it has one, first turns what older releases wrote into today's fields): every value must have its field's
type (an int stands for a float; a list for a tuple), a missing field takes its default, a field
without one must be there, and a key the class does not know is refused, unless listed in `ignore`.
Errors are FerattErrors naming the file (`where`) and the field's path (`config.lr`, `folds[2].test`).
Range checks stay in each class's `__post_init__`, which decoding runs like any construction.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from feratt.errors import FerattError

T = TypeVar("T")

#: Field metadata: leave the field out of the JSON while it is None.
OMIT_NONE: Mapping[str, bool] = types.MappingProxyType({"omit_none": True})
#: Field metadata: never write the field; on reading it takes its default.
TRANSIENT: Mapping[str, bool] = types.MappingProxyType({"transient": True})


def json_name(key: str) -> Mapping[str, str]:
    """Field metadata: the field is written under `key`."""
    return types.MappingProxyType({"json_name": key})


#: A JSON value, as json.loads gives it.
JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]
#: A JSON object: a document, a record, or a part of one.
JSONObject = dict[str, JSONValue]


def encode(value: Any) -> JSONValue:
    """`value` as JSON values: dataclasses field by field, tuples as lists, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data: dict[str, JSONValue] = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if field.metadata.get("transient") or (field.metadata.get("omit_none") and item is None):
                continue
            data[field.metadata.get("json_name", field.name)] = encode(item)
        return data
    if isinstance(value, tuple | list):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls, localns={"JSONValue": JSONValue})


def _is_json(hint: Any) -> bool:
    """Whether `hint` is JSONValue (as get_type_hints gives it back)."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return False
    return {type(None), bool, int, float, str} <= set(typing.get_args(hint))


def _fail(where: str, path: str, problem: str) -> FerattError:
    return FerattError(f"{where}: {path or 'the document'} {problem}")


def decode(cls: type[T], data: Any, where: str, *, ignore: tuple[str, ...] = ()) -> T:
    """The `cls` dataclass that `data` (JSON values) describes; FerattError naming `where` and the field."""
    return _dataclass(cls, data, where, "", ignore)


def _dataclass(cls: type[T], data: Any, where: str, path: str, ignore: tuple[str, ...] = ()) -> T:
    if not isinstance(data, dict):
        raise _fail(where, path, f"must be an object of {cls.__name__}'s fields")
    upgrade = getattr(cls, "upgrade_record", None)
    if upgrade is not None:  # a class that changed may read what older releases wrote
        data = upgrade(data)
    fields = {
        f.metadata.get("json_name", f.name): f
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if not f.metadata.get("transient")
    }
    unknown = sorted(set(data) - set(fields) - set(ignore))
    if unknown:
        raise _fail(where, path, f"has unknown field(s) {', '.join(unknown)}")
    hints = _hints(cls)
    values: dict[str, object] = {}
    for name, field in fields.items():
        inner = f"{path}.{name}" if path else name
        if name in data:
            values[field.name] = _value(hints[field.name], data[name], where, inner)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise _fail(where, inner, "is missing")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise _fail(where, path, f"is not a valid {cls.__name__}: {exc}") from None
    except FerattError as exc:
        raise FerattError(f"{where}: {exc}", field=exc.field) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(kind: type, value: Any, where: str, path: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise _fail(where, path, "must be true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(where, path, "must be a whole number")
    if kind is float:
        if _is_number(value) and math.isfinite(value):
            return float(value)
        raise _fail(where, path, "must be a finite number")
    if kind is str:
        if isinstance(value, str):
            return value
        raise _fail(where, path, "must be a string")
    if kind is Path:
        if isinstance(value, str):
            return Path(value)
        raise _fail(where, path, "must be a path (a string)")
    raise TypeError(f"the codec cannot decode {kind!r}")


def _union(hint: Any, value: Any, where: str, path: str) -> Any:
    options = typing.get_args(hint)
    if value is None:
        if type(None) in options:
            return None
        raise _fail(where, path, "must not be null")
    problems = []
    for option in (o for o in options if o is not type(None)):
        try:
            return _value(option, value, where, path)
        except FerattError as exc:
            problems.append(str(exc))
    raise FerattError(problems[0]) if len(problems) == 1 else _fail(where, path, "has the wrong type")


def _sequence(hint: Any, value: Any, where: str, path: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if not isinstance(value, list):
        raise _fail(where, path, "must be a list")
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        kinds = [args[0]] * len(value) if args else [Any] * len(value)
    else:
        kinds = list(args)
        if len(kinds) != len(value):
            raise _fail(where, path, f"must hold {len(kinds)} values, not {len(value)}")
    items = [
        _value(kind, item, where, f"{path}[{i}]")
        for i, (kind, item) in enumerate(zip(kinds, value, strict=True))
    ]
    return items if origin is list else tuple(items)


def _json(value: Any, where: str, path: str) -> JSONValue:
    """`value`, once checked to be JSON: null, true/false, numbers, strings, lists and objects of them."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _scalar(float, value, where, path)
    if isinstance(value, list):
        return [_json(item, where, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _json(item, where, f"{path}[{key!r}]") for key, item in value.items()}
    raise _fail(where, path, "must be a JSON value")


def _value(hint: Any, value: Any, where: str, path: str) -> Any:
    if hint is Any:
        return value
    if _is_json(hint):
        return _json(value, where, path)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _union(hint, value, where, path)
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        choices = ", ".join(map(repr, typing.get_args(hint)))
        raise _fail(where, path, f"must be one of {choices}, not {value!r}")
    if origin in (list, tuple):
        return _sequence(hint, value, where, path)
    if origin is dict:
        key_kind, item_kind = typing.get_args(hint)
        if not isinstance(value, dict):
            raise _fail(where, path, "must be an object")
        if key_kind is int:
            if not all(isinstance(k, str) and k.lstrip("-").isdigit() for k in value):
                raise _fail(where, path, "must have whole numbers as keys")
            return {int(k): _value(item_kind, v, where, f"{path}[{k}]") for k, v in value.items()}
        return {k: _value(item_kind, v, where, f"{path}[{k!r}]") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, where, path)
    if value is None:
        raise _fail(where, path, "must not be null")
    return _scalar(hint, value, where, path)
