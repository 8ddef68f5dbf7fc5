"""Typed options and YAML configs, validated with errors that name the key, the value and what is
allowed.

An option is declared once, as a dataclass field made by `option(...)` (kind, default, bounds,
choices, help text, config section). From those declarations come the YAML schema of a config,
the validation of keyword arguments and of the estimators' `method_params`, and the help text.
YAML is read strictly: aliases and anchors, duplicate keys and non-mapping sections are refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml


class ConfigError(ValueError):
    """A config or an option value that does not match its declaration."""


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
          "floats": "a list of numbers", "ints": "a list of positive integers", "any": "any value"}


@dataclass(frozen=True)
class Field:
    """One option: its kind, default and (optional) allowed values or numeric range.

    `check` (optional) is called with the coerced value and returns it or raises ValueError; it
    validates what a kind cannot express (an activation spec, an initial model).
    """

    kind: str  # a key of _KINDS
    default: Any = None
    choices: tuple | None = None
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive
    open_low: bool = False  # low is exclusive
    open_high: bool = False  # high is exclusive
    help: str = ""
    check_value: Any = None
    nullable: bool = False  # null is allowed although the default is not null

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = [_KINDS[self.kind]]
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '≥'} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.open_high else '≤'} {self.high:g}")
        if (self.default is None or self.nullable) and self.kind != "any":
            parts.append("or null")
        return " ".join(parts)

    def check(self, key: str, value, what: str = "config key"):
        """The value coerced to this field's kind, or a ConfigError naming `what` `key`, the
        value and what is allowed."""
        if value is None:
            if self.default is None or self.nullable:
                return None
            raise ConfigError(f"{what} {key!r}: value null is not allowed; allowed: {self.allowed()}")
        if isinstance(value, np.generic):
            value = value.item()
        ok, v = _coerce(self.kind, value)
        if ok and self.choices is not None and v not in self.choices:
            ok = False
        if ok and self.kind in ("int", "float"):
            ok = _in_range(v, self)
        if ok and self.kind == "floats":
            ok = all(_in_range(x, self) for x in v)
        if not ok:
            raise ConfigError(f"{what} {key!r}: value {value!r} is not allowed; allowed: {self.allowed()}")
        if self.check_value is not None:
            try:
                v = self.check_value(v)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{what} {key!r}: value {value!r} is not allowed: {exc}") from None
        return v


def _in_range(v, f: Field) -> bool:
    if not np.isfinite(v):
        return False
    if f.low is not None and (v < f.low or (f.open_low and v == f.low)):
        return False
    return not (f.high is not None and (v > f.high or (f.open_high and v == f.high)))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _coerce(kind: str, value):
    if kind == "any":
        return True, value
    if kind == "bool":
        return isinstance(value, bool), value
    if kind == "int":
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if kind == "float":
        return (True, float(value)) if _is_number(value) else (False, value)
    if kind == "str":
        return isinstance(value, str), value
    if kind == "floats":
        if _is_number(value):
            return True, [float(value)]
        if isinstance(value, (list, tuple)) and value and all(_is_number(x) for x in value):
            return True, [float(x) for x in value]
        return False, value
    if kind == "ints":
        if isinstance(value, (list, tuple)) and value and all(
                isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in value):
            return True, [int(x) for x in value]
        return False, value
    raise AssertionError(kind)


# ---- typed options ----------------------------------------------------------------------------------
METHOD_SECTION = None  # an option in the fitting method's own section (e.g. `adjoint:`)


def option(default=None, *, kind: str | None = None, section: str | None = METHOD_SECTION,
           help: str = "", estimator: str | None = None, **bounds):
    """A dataclass field declaring one option.

    kind: inferred from the default when omitted; section: the config section it lives in
    ("model", "run", "top" for a top-level key, None for the method's own section); estimator:
    the name of the scikit-learn estimator parameter that sets it, if any; bounds: choices, low,
    high, open_low, open_high, check_value (see Field).
    """
    if kind is None:
        kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(default))
        if kind is None:
            raise TypeError(f"option default {default!r}: give kind= explicitly")
    spec = Field(kind, default, help=help, **bounds)
    meta = {"field": spec, "section": section, "estimator": estimator}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    name: str
    field: Field
    section: str | None
    estimator: str | None


def option_specs(cls) -> list[OptionSpec]:
    """The declared options of an options dataclass, in declaration order."""
    return [OptionSpec(f.name, f.metadata["field"], f.metadata["section"], f.metadata["estimator"])
            for f in dataclasses.fields(cls) if "field" in f.metadata]


def make_options(cls, values: dict, where: str = ""):
    """An instance of the options dataclass `cls` from keyword values, each checked by its Field;
    unknown names are refused with the allowed ones listed."""
    specs = {s.name: s for s in option_specs(cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}{' for ' + where if where else ''}; "
                          f"allowed: {sorted(specs)}")
    return cls(**{k: specs[k].field.check(k, v, "option") for k, v in values.items()})


# ---- config files -----------------------------------------------------------------------------------
def validate(raw, schema: dict, prefix: str = "") -> dict:
    """Check `raw` against a nested schema (dict of Field or dict); fill defaults; refuse unknown
    keys and sections that are not mappings."""
    if not isinstance(raw, dict):
        where = f"section {prefix!r}" if prefix else "the top level"
        raise ConfigError(f"config {where} must be a mapping of keys to values, got {raw!r}")
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
            out[key] = validate(raw.get(key, {}), spec, full)
        else:
            out[key] = spec.check(full, raw.get(key, spec.default))
    return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases/anchors (no alias bombs) and duplicate keys."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise ConfigError(f"YAML aliases (*name) are not allowed in configs "
                              f"({_where(self.peek_event().start_mark)}); write the value out")
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise ConfigError(f"YAML anchors (&name) are not allowed in configs "
                              f"({_where(event.start_mark)})")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"duplicate config key {key!r} ({_where(key_node.start_mark)})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def load_yaml(path) -> dict:
    """A YAML mapping read strictly (see _StrictLoader); errors name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config {path} is not a file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of keys to values")
    return raw
