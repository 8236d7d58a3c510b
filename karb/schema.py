"""Build frozen config dataclasses from plain YAML data, with errors that name the key path.

Rules, applied recursively by field type:

* unknown keys are errors (a typo must fail at start-up, not in trading);
* fields without a default are required;
* numbers are never negative unless the field says ``metadata={"signed": True}``, and
  ``metadata={"gt": 0}`` makes zero an error too;
* ``Decimal`` fields accept strings, ints and floats (floats through ``str()``, so ``0.0005``
  stays ``Decimal("0.0005")``); ``bool`` is never accepted where a number belongs;
* ``Literal[...]`` fields accept only the listed values;
* float fields must be finite (``.nan`` / ``.inf`` are refused: a NaN compares false with every
  limit and later crashes Decimal arithmetic);
* ``metadata={"ge": n, "why": "..."}`` sets a minimum with its reason;
* ``metadata={"schemes": ("ws", "wss")}`` makes a string field a URL with one of those schemes
  and a host.

Every failure raises ``ConfigError("venues.upbit.read_timeout: expected a number, was 'fast'")``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Union
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A configuration value is wrong. The message starts with the key path."""


def build(cls: type, data: Any, path: str = "") -> Any:
    """Return ``cls`` built from ``data`` (a mapping), checked against its type hints."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, was {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{_join(path, str(key))}: unknown key (known keys: {known})")
    kwargs = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key_path, f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key_path}: required key is missing")
    return cls(**kwargs)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _convert(tp: Any, value: Any, path: str, meta: Any = None) -> Any:
    meta = meta or {}
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) < len(typing.get_args(tp)):
                return None
            raise ConfigError(f"{path}: must not be empty")
        return _convert(args[0], value, path, meta)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: must be one of {', '.join(map(str, allowed))}, was {_show(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, was {_show(value)}")
        item_tp = typing.get_args(tp)[0]
        items = [_convert(item_tp, v, f"{path}[{i}]", meta) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, was {_show(value)}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _convert(val_tp, v, _join(path, str(k)), meta) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, was {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, was {_show(value)}")
        if "schemes" in meta:
            _check_url(value, path, meta["schemes"])
        return value
    if tp in (int, float, Decimal):
        return _number(tp, value, path, meta)
    raise ConfigError(f"{path}: unsupported type {tp}")  # a programming error in the schema


def _number(tp: type, value: Any, path: str, meta: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{path}: expected a number, was {_show(value)}")
    try:
        if tp is Decimal:
            number: Any = Decimal(str(value))
            if not number.is_finite():
                raise InvalidOperation
        elif tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            number = int(value) if not isinstance(value, str) else int(value.replace("_", ""))
        else:
            number = float(value)
    except (ValueError, InvalidOperation):
        kind = "a whole number" if tp is int else "a number"
        raise ConfigError(f"{path}: expected {kind}, was {_show(value)}") from None
    if tp is float and not math.isfinite(number):
        raise ConfigError(f"{path}: expected a finite number, was {_show(value)}")
    if not meta.get("signed") and number < 0:
        raise ConfigError(f"{path}: must not be negative, was {value}")
    if "gt" in meta and not number > meta["gt"]:
        raise ConfigError(f"{path}: must be greater than {meta['gt']}, was {value}")
    if "ge" in meta and not number >= meta["ge"]:
        why = f" ({meta['why']})" if "why" in meta else ""
        raise ConfigError(f"{path}: must be at least {meta['ge']}{why}, was {value}")
    if "le" in meta and not number <= meta["le"]:
        raise ConfigError(f"{path}: must be at most {meta['le']}, was {value}")
    return number


def _check_url(value: str, path: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(value)
        ok = parts.scheme in schemes and bool(parts.hostname)
    except ValueError:  # e.g. a malformed IPv6 host or port
        ok = False
    if not ok:
        wanted = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{path}: expected a URL starting {wanted} with a host, was {_show(value)}")
