"""Turn plain dicts (parsed TOML or JSON) into typed, validated dataclasses.

One small engine serves config files and MQTT message bodies alike, so both report
problems the same way: the dotted path of the field, what was expected, what was found.
Unknown keys are reported (with a did-you-mean hint), never silently ignored.

Constraints ride in ``dataclasses.field(metadata=...)``:
``min``/``max`` (numbers, inclusive), ``min_len``/``max_len`` (strings and lists),
``pattern`` (regex a string must fully match), ``choices`` (allowed values),
``help`` (what the field is for; shown in error messages).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from .errors import ValidationError

T = TypeVar("T")

_MISSING = dataclasses.MISSING
_hints_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _hints_cache.get(cls)
    if hints is None:
        hints = get_type_hints(cls)
        _hints_cache[cls] = hints
    return hints


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is Path:
        return "a file path (string)"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if dataclasses.is_dataclass(tp):
        return "a table"
    if origin in (list, tuple):
        args = get_args(tp)
        return f"a list (each item {_describe(args[0])})" if args else "a list"
    if origin is dict:
        return "a table"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in parts)
    return getattr(tp, "__name__", str(tp))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Collector:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path or '(top level)'}: {message}")


def _check_constraints(value: Any, meta: typing.Mapping[str, Any], path: str, errs: _Collector) -> bool:
    ok = True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and value < lo or hi is not None and value > hi:
            rng = f"between {lo} and {hi}" if lo is not None and hi is not None else (
                f"at least {lo}" if lo is not None else f"at most {hi}")
            errs.add(path, f"must be {rng}, got {_short(value)}")
            ok = False
    if isinstance(value, (str, list, tuple, dict)):
        lo, hi = meta.get("min_len"), meta.get("max_len")
        unit = "characters" if isinstance(value, str) else "items"
        if lo is not None and len(value) < lo:
            errs.add(path, f"must have at least {lo} {unit}, got {len(value)}")
            ok = False
        if hi is not None and len(value) > hi:
            errs.add(path, f"must have at most {hi} {unit}, got {len(value)}")
            ok = False
    if isinstance(value, str) and meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        hint = meta.get("pattern_help") or f"the pattern {meta['pattern']}"
        errs.add(path, f"must be {hint}, got {_short(value)}")
        ok = False
    if "choices" in meta and value not in meta["choices"]:
        errs.add(path, "must be one of " + ", ".join(repr(c) for c in meta["choices"]) + f", got {_short(value)}")
        ok = False
    return ok


def _convert(value: Any, tp: Any, path: str, errs: _Collector, base_dir: Path | None) -> Any:
    """Return the converted value, or _MISSING after recording a problem."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        for cand in candidates:
            trial = _Collector()
            out = _convert(value, cand, path, trial, base_dir)
            if not trial.problems:
                return out
        if len(candidates) == 1:
            return _convert(value, candidates[0], path, errs, base_dir)
        errs.add(path, f"expected {_describe(tp)}, got {_short(value)}")
        return _MISSING
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                errs.add(path, "must be a finite number")
                return _MISSING
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            if "\x00" in value:
                errs.add(path, "must not contain NUL characters")
                return _MISSING
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                errs.add(path, "must be valid Unicode text (it holds a lone surrogate)")
                return _MISSING
            return value
    elif tp is Path:
        if isinstance(value, str) and value and "\x00" not in value:
            p = Path(value).expanduser()
            if base_dir is not None and not p.is_absolute():
                p = base_dir / p
            return p
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except (ValueError, TypeError):
            errs.add(path, f"expected {_describe(tp)}, got {_short(value)}")
            return _MISSING
    elif origin is typing.Literal:
        if value in get_args(tp):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, path, errs, base_dir)
    elif origin in (list, tuple):
        if isinstance(value, list):
            (item_tp, *_rest) = get_args(tp) or (Any,)
            out = []
            for i, item in enumerate(value):
                conv = _convert(item, item_tp, f"{path}[{i}]", errs, base_dir)
                if conv is not _MISSING:
                    out.append(conv)
            return tuple(out) if origin is tuple else out
    elif origin is dict:
        if isinstance(value, dict):
            key_tp, val_tp = get_args(tp) or (str, Any)
            out_d = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    errs.add(path, f"keys must be strings, got {_short(k)}")
                    continue
                conv = _convert(v, val_tp, f"{path}.{k}", errs, base_dir)
                if conv is not _MISSING:
                    out_d[k] = conv
            return out_d
    else:  # pragma: no cover - a programming error in a schema
        raise TypeError(f"unsupported field type {tp!r} at {path}")
    errs.add(path, f"expected {_describe(tp)}, got {_short(value)}")
    return _MISSING


def _build(cls: type[T], data: dict, path: str, errs: _Collector, base_dir: Path | None) -> Any:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    failed = False
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else key
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            errs.add(where, f"unknown key{hint}; allowed keys: {', '.join(sorted(fields))}")
            failed = True
    for name, f in fields.items():
        where = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is _MISSING and f.default_factory is _MISSING:  # type: ignore[misc]
                helptext = f.metadata.get("help")
                errs.add(where, f"is required ({_describe(hints[name])}{'; ' + helptext if helptext else ''})")
                failed = True
            continue
        value = _convert(data[name], hints[name], where, errs, base_dir)
        if value is _MISSING:
            failed = True
            continue
        if not _check_constraints(value, f.metadata, where, errs):
            failed = True
            continue
        kwargs[name] = value
    if failed:
        return _MISSING
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ cross-field checks
        errs.add(path, str(exc))
        return _MISSING
    return obj


def structure(cls: type[T], data: Any, *, source: str | None = None, base_dir: Path | None = None,
              error: type[ValidationError] = ValidationError) -> T:
    """Build ``cls`` from ``data`` or raise ``error`` listing every problem found."""
    errs = _Collector()
    if not isinstance(data, dict):
        errs.add("", f"expected a table/object, got {type(data).__name__}")
        raise error(errs.problems, source=source)
    obj = _build(cls, data, "", errs, base_dir)
    if errs.problems or obj is _MISSING:
        raise error(errs.problems or ["invalid"], source=source)
    return obj


def unstructure(obj: Any) -> Any:
    """The inverse of :func:`structure`: plain JSON-ready values, ``None`` fields dropped."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if v is None:
                continue
            out[f.name] = unstructure(v)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [unstructure(v) for v in obj]
    if isinstance(obj, dict):
        return {k: unstructure(v) for k, v in obj.items()}
    return obj


def field(default: Any = _MISSING, *, default_factory: Any = _MISSING, **meta: Any) -> Any:
    """``dataclasses.field`` with validation metadata as keyword arguments."""
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
