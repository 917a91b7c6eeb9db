"""YAML configs mapped onto dataclasses, with ``key=value`` overrides.

Unknown keys and wrong types are errors that list the valid keys, before any work starts.
Nested dataclasses are addressed with dots (``--set train.epochs=5``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key, value or file that cannot be used (message says what to fix)."""


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints widen to floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} does not match {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[]") for v in value]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys / wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; valid keys: "
            f"{', '.join(prefix + f for f in fields)}"
        )
    kwargs = {k: _coerce(_onto_default(fields[k], v), hints[k], prefix + k)
              for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None


def _onto_default(f: dataclasses.Field, value: Any) -> Any:
    """A partial section (a mapping) for a field whose default is a dataclass instance is
    merged onto that default: the keys a YAML file or ``--set`` leaves out keep the values of
    the config's own defaults (a study's recipe), not those of the section's class."""
    if not isinstance(value, dict) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default) or isinstance(default, type):
        return value
    return _deep_merge(to_dict(default), value)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data dict of a (nested) dataclass, YAML/JSON friendly."""
    out = dataclasses.asdict(obj)

    def clean(v: Any) -> Any:
        if isinstance(v, tuple):
            return [clean(x) for x in v]
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return clean(out)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` → (["a", "b"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else ""


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Read ``path`` (YAML) on top of ``base``, apply ``key=value`` overrides, build ``cls``."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            line = str(exc).splitlines()[0]
            raise ConfigError(f"config file {p} is not valid YAML: {line}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of keys")
        data = _deep_merge(data, loaded)
    for item in overrides or []:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k} is not a section")
        node[keys[-1]] = value
    return from_dict(cls, data)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k),
                                                                              dict) else v
    return out


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def config_keys(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(key, value)`` of every field of a (nested) dataclass instance, sections dotted
    (``train.epochs``), values as YAML would read them (``null``, ``true``, ``[64, 64]``)."""
    out: list[tuple[str, str]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += config_keys(value, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, _show(value)))
    return out


def keys_help(obj: Any, title: str) -> str:
    """The config keys of ``obj`` with their defaults, for a command's ``--help``."""
    rows = config_keys(obj)
    width = max(len(k) for k, _ in rows)
    lines = [f"config keys ({title}; change with --set KEY=VALUE or a YAML --config; shipped "
             "configs: `ncscope configs`):"]
    return "\n".join([*lines, *(f"  {k:<{width}}  {v}" for k, v in rows)])


CONFIG_PACKAGE = "ncscope.configs"


def shipped_configs() -> list[str]:
    """Names of the YAML configs shipped with ncscope (``ncscope/configs``)."""
    return sorted(p.name[:-5] for p in resources.files(CONFIG_PACKAGE).iterdir()
                  if p.name.endswith(".yaml"))


def resolve_config(name: str | None) -> Path | None:
    """A config path, or the name of a shipped config (with or without ``.yaml``)."""
    if name is None:
        return None
    p = Path(name)
    if p.is_file():
        return p
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
    shipped = resources.files(CONFIG_PACKAGE) / f"{stem}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise ConfigError(
        f"config {name!r} not found; give a YAML path or one of: {', '.join(shipped_configs())}"
    )
