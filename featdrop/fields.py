"""``FIELD=VALUE`` on a command line: ``featdrop train`` and ``featdrop grid`` take config fields this way,
with the notebook's parameter names. A value is read by the field's annotated type, so ``subset=all`` is a
string and ``subset=5000`` a number; ``FIELD=V1,V2`` (grid only) sweeps."""
from __future__ import annotations

import difflib
import re
from typing import Any

from . import config
from .errors import ConfigError


def check_field(name: str) -> None:
    """ConfigError unless ``name`` is a config field, suggesting the closest one."""
    if name not in config.field_names():
        close = difflib.get_close_matches(name, config.field_names(), n=1)
        raise ConfigError(f"unknown config field {name!r}"
                          + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; known fields: {', '.join(config.field_names())}")


def check_not_options(args: list[str]) -> None:
    """ConfigError for a config field written as an option (``--epochs 1``, ``--epochs=1``): fields are given
    as ``FIELD=VALUE``, and the message says so with the value given."""
    for i, arg in enumerate(args):
        name, eq, value = arg[2:].partition("=")
        if not arg.startswith("--") or name.replace("-", "_") not in config.field_names():
            continue
        name = name.replace("-", "_")
        if not eq:
            value = args[i + 1] if i + 1 < len(args) and "=" not in args[i + 1] else "VALUE"
        given = arg if eq or value == "VALUE" else f"{arg} {value}"
        raise ConfigError(f"{given!r} is not an option: config fields are given as FIELD=VALUE, here "
                          f"{name}={value} (--help lists the fields)")


def parse_value(name: str, text: str) -> Any:
    """A command-line value as the field's annotated type: True/False, None, int, float or str (tried in
    the annotation's order, so ``subset`` (int | str | None) reads "5000" as 5000 and "all" as "all")."""
    check_field(name)
    types, t = config._types(name), text.strip()
    if t == "None":
        if type(None) in types:
            return None
        raise ConfigError(f"{name}=None is invalid: {name} is {config.type_names(types)}, not optional")
    for typ in types:
        if typ is bool and t in ("True", "False", "true", "false"):
            return t in ("True", "true")
        if typ is int and re.fullmatch(r"[+-]?\d+", t):
            return int(t)
        if typ is float:
            try:
                return float(t)
            except ValueError:
                pass
        if typ is str and t:
            return t
    allowed = "True or False" if bool in types else config.type_names(types)
    raise ConfigError(f"{name}={text!r} is invalid: expected {allowed}")


def parse_assignments(args: list[str], sweep: bool = True) -> tuple[dict[str, list], dict[str, Any]]:
    """``FIELD=V1,V2`` → sweep[FIELD] = [V1, V2]; ``FIELD=V`` → fixed[FIELD] = V (in argument order).
    ``sweep=False`` (one run): a comma list is an error."""
    swept: dict[str, list] = {}
    fixed: dict[str, Any] = {}
    for arg in args:
        name, eq, text = arg.partition("=")
        name = name.strip()
        if not eq or not name:
            example = ("overlay=shapes,digits (sweeps) or epochs=10 (fixes)" if sweep
                       else "overlay=shapes epochs=10")
            raise ConfigError(f"{arg!r} is not FIELD=VALUE: e.g. {example}")
        check_field(name)
        if name in swept or name in fixed:
            raise ConfigError(f"{name} is given twice; give it once"
                              + (f", with all its values: {name}=V1,V2,..." if sweep else ""))
        parts = text.split(",")
        if not text.strip() or any(not p.strip() for p in parts):
            raise ConfigError(f"{arg!r}: empty value; give {name}="
                              + ("V1,V2,... with no empty entries" if sweep else "VALUE"))
        if len(parts) > 1 and not sweep:
            raise ConfigError(f"{arg!r}: one run takes one value per field; sweep several with featdrop grid")
        values = [parse_value(name, p) for p in parts]
        if len(values) == 1:
            fixed[name] = values[0]
        else:
            swept[name] = values
    return swept, fixed
