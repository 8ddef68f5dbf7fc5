"""YAML run configs, validated against a schema whose errors name the key, the value and what is
allowed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config that does not match the schema."""


@dataclass(frozen=True)
class Field:
    """One config key: its kind, default and (optional) allowed values or numeric range."""

    kind: str  # "int", "float", "bool", "str", "floats" (list of float), "any"
    default: Any = None
    choices: tuple | None = None
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive
    open_low: bool = False  # low is exclusive
    open_high: bool = False  # high is exclusive
    help: str = ""

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = [{"int": "an integer", "float": "a number", "bool": "true or false",
                  "str": "a string", "floats": "a list of numbers", "any": "any value"}[self.kind]]
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '≥'} {self.low}")
        if self.high is not None:
            parts.append(f"{'<' if self.open_high else '≤'} {self.high}")
        return " ".join(parts)

    def check(self, key: str, value):
        if value is None:
            if self.default is None:
                return None
            raise ConfigError(f"config key {key!r}: value null is not allowed; allowed: {self.allowed()}")
        ok, v = _coerce(self.kind, value)
        if ok and self.choices is not None and v not in self.choices:
            ok = False
        if ok and self.kind in ("int", "float"):
            ok = _in_range(v, self)
        if ok and self.kind == "floats":
            ok = all(_in_range(x, self) for x in v)
        if not ok:
            raise ConfigError(f"config key {key!r}: value {value!r} is not allowed; allowed: {self.allowed()}")
        return v


def _in_range(v, f: Field) -> bool:
    if f.low is not None and (v < f.low or (f.open_low and v == f.low)):
        return False
    return not (f.high is not None and (v > f.high or (f.open_high and v == f.high)))


def _coerce(kind: str, value):
    if kind == "any":
        return True, value
    if kind == "bool":
        return isinstance(value, bool), value
    if kind == "int":
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if kind == "str":
        return isinstance(value, str), value
    if kind == "floats":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, [float(value)]
        if isinstance(value, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
        ):
            return True, [float(x) for x in value]
        return False, value
    raise AssertionError(kind)


def validate(raw: dict, schema: dict, prefix: str = "") -> dict:
    """Check `raw` against a nested schema (dict of Field or dict); fill defaults; refuse unknown keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {prefix or '(top level)'!r} must be a mapping, got {raw!r}")
    unknown = set(raw) - set(schema)
    if unknown:
        where = f"section {prefix!r}" if prefix else "the top level"
        raise ConfigError(
            f"unknown config key(s) {sorted(unknown)} in {where}; allowed keys: {sorted(schema)}"
        )
    out = {}
    for key, spec in schema.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(spec, dict):
            out[key] = validate(raw.get(key) or {}, spec, full)
        else:
            out[key] = spec.check(full, raw.get(key, spec.default))
    return out


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of keys to values")
    return raw
