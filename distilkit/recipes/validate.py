"""Build typed dataclasses from plain YAML values, rejecting unknown keys, wrong types and missing fields.

Every error names the file, the line (when known) and the dotted key path, e.g.
`recipes/x.yaml:14: stages[2].losses.kl: expected a number, got 'five'`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from distilkit.errors import DistilkitError

Path = tuple[Any, ...]

#: Largest integer magnitude a recipe value may have (int64); fields have tighter bounds of their own.
MAX_INT = 2**63 - 1


class Context:
    """Where values come from: the file name and the key-path → line map."""

    def __init__(self, source: str, lines: dict[Path, int]):
        self.source = source
        self.lines = lines

    def fail(self, path: Path, message: str) -> DistilkitError:
        line = None
        for cut in range(len(path), -1, -1):  # nearest enclosing node with a known line
            line = self.lines.get(path[:cut])
            if line is not None:
                break
        where = f"{self.source}:{line}" if line is not None else self.source
        key = dotted(path)
        return DistilkitError(f"{where}: {key + ': ' if key else ''}{message}")


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def build(cls: type, value: Any, ctx: Context, path: Path = ()) -> Any:
    """Construct dataclass `cls` from mapping `value`, validating recursively."""
    if not isinstance(value, dict):
        raise ctx.fail(path, f"expected a mapping for {cls.__name__}, got {_describe(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise ctx.fail(path + (unknown[0],), f"unknown key; expected one of {sorted(fields)}")
    kwargs = {}
    for name, field in fields.items():
        if name in value:
            kwargs[name] = coerce(hints[name], value[name], ctx, path + (name,))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ctx.fail(path, f"missing required key {name!r}")
    try:
        obj = cls(**kwargs)
    except DistilkitError as err:
        raise ctx.fail(path, str(err)) from None
    check = getattr(obj, "check", None)
    if check is not None:
        problem = check()
        if problem:
            key, message = problem
            raise ctx.fail(path + ((key,) if key else ()), message)
    return obj


def coerce(tp: Any, value: Any, ctx: Context, path: Path) -> Any:
    """Check `value` against type `tp` (dataclass, list, dict, Optional, Literal, scalars)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, ctx, path)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(option, value, ctx, path)
            except DistilkitError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ctx.fail(path, f"expected one of {list(allowed)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ctx.fail(path, f"expected a list, got {_describe(value)}")
        (item,) = typing.get_args(tp)
        return [coerce(item, v, ctx, path + (i,)) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ctx.fail(path, f"expected a mapping, got {_describe(value)}")
        _, item = typing.get_args(tp)
        return {k: coerce(item, v, ctx, path + (k,)) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.fail(path, f"expected a number, got {_describe(value)}")
        if isinstance(value, int) and abs(value) > MAX_INT:
            raise ctx.fail(path, f"{_describe(value)} is too large")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.fail(path, f"expected an integer, got {_describe(value)}")
        if abs(value) > MAX_INT:
            raise ctx.fail(path, f"{_describe(value)} is too large")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ctx.fail(path, f"expected true or false, got {_describe(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ctx.fail(path, f"expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"validate.coerce: unsupported type {tp!r}")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"  # errors stay one short line
