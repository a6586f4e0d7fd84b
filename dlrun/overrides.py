"""Command-line overrides (`key=value`, `+key=value`, `~key`, `key=a,b`, `key=choice(...)`),
read with Hydra's own parser: the grammar `dlrun train` hands to Hydra, so every place that
needs an override's key, group, value or sweep reads it the way Hydra will. An argument Hydra
cannot parse is None here; composing the config then reports it (cli.check_composes)."""

from __future__ import annotations

import functools


@functools.cache
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_override(arg: str):
    """The Hydra Override of one argument, or None where it is not an override Hydra parses
    (a flag, a positional word, a value with unquoted non-ASCII letters)."""
    from hydra.errors import HydraException

    if arg.startswith("-") or "=" not in arg and not arg.startswith("~"):
        return None
    try:
        return _parser().parse_override(arg)
    except HydraException:
        return None


def parse_overrides(args: list[str]) -> list:
    """The Overrides among `args`, in order (arguments that are not overrides left out)."""
    return [o for o in map(parse_override, args) if o is not None]


def override_key(arg: str) -> str | None:
    """The key or group an argument sets, without its +, ++ or ~ (None: not an override)."""
    o = parse_override(arg)
    return o.key_or_group if o is not None else None


def override_value(o) -> str | None:
    """A plain (not sweep) override's value as written, unquoted ('' for key=, None for null)."""
    if o.is_sweep_override():
        return None
    value = o.value()
    return None if value is None else o.get_value_element_as_str() if not isinstance(value, str) else value


def sweep_choices(o) -> list[str] | None:
    """The values of a choice sweep (key=a,b or key=choice(a,b)) as written; None for range,
    interval and glob sweeps (Hydra expands those) and for plain values."""
    return list(o.sweep_string_iterator()) if o.is_sweep_override() and o.is_choice_sweep() else None


def first_job(arg: str) -> str:
    """A sweep argument reduced to its first job (key=a,b -> key=a); range, interval and glob
    sweeps and hydra.* keys are left to Hydra (''); anything else is returned as it is."""
    o = parse_override(arg)
    if o is None:
        return arg
    if o.key_or_group.startswith("hydra."):
        return ""
    if not o.is_sweep_override():
        return arg
    values = sweep_choices(o)
    return f"{o.get_key_element()}={values[0]}" if values else ""


def value_of(args: list[str], name: str) -> str | None:
    """The value the last override of `name` in `args` sets (None when none does)."""
    found = None
    for o in parse_overrides(args):
        if o.key_or_group == name:
            found = override_value(o)
    return found
