"""The key=value options of `dlrun explain` and `dlrun attack`: defaults from configs/explain.yaml
and configs/attack.yaml, checked and typed before any run is downloaded (no TensorFlow here)."""

from __future__ import annotations

from types import SimpleNamespace

from dlrun.errors import DlrunError, did_you_mean

EPS_HINT = "eps is a budget in [0, 1] units of the raw pixel range, e.g. eps=0.01,0.03,0.1"


def defaults(command: str) -> dict:
    import yaml

    from dlrun.config_tree import config_dir

    return yaml.safe_load((config_dir() / f"{command}.yaml").read_text())


def read(command: str, given: dict[str, str], run_keys=()) -> SimpleNamespace:
    """The command's options: its YAML defaults with `given` (strings from the command line) on top."""
    import yaml

    values = defaults(command)
    for key, text in given.items():
        if key not in values:
            raise DlrunError(f"dlrun {command}: unknown argument '{key}'", did_you_mean(key, [*run_keys, *values]))
        default = values[key]
        if isinstance(default, bool | int | float) and key not in ("eps", "units"):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = text
            if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, int | float):
                kind = "true or false" if isinstance(default, bool) else "a number"
                raise DlrunError(f"{key}: '{text}' is not {kind}", f"default: {key}={default}")
            values[key] = float(value) if isinstance(default, float) else value
            if isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int):
                raise DlrunError(f"{key}: '{text}' is not a whole number", f"default: {key}={default}")
        else:
            values[key] = None if text in ("", "null", "none") and default is None else text
    _check(command, values)
    return SimpleNamespace(**values)


def _check(command: str, v: dict) -> None:
    from dlrun.explain import ATTACKS, EXPLAINERS

    registry = EXPLAINERS if command == "explain" else ATTACKS
    v["method"] = [registry.canonical(m.strip()) for m in str(v["method"]).split(",") if m.strip()]
    if not v["method"]:
        raise DlrunError(f"dlrun {command}: method is empty", f"valid: {', '.join(registry.names())}")
    for key, value in v.items():
        number = isinstance(value, int | float) and not isinstance(value, bool) and key != "fill"
        if number and (value < 0 or (value == 0 and key != "seed")):
            raise DlrunError(f"{key}: must be positive, got {value}")
    for key in ("patch", "stride", "fraction", "fooling_confidence", "pgd_step_size"):
        if key in v and not 0 < v[key] <= 1:
            raise DlrunError(f"{key}: must lie in (0, 1], got {v[key]}")
    if "fill" in v and not 0 <= v["fill"] <= 1:
        raise DlrunError(f"fill: must lie in [0, 1] (units of the raw pixel range), got {v['fill']}")
    if "eps" in v:
        v["eps"] = parse_eps(str(v["eps"]))
    if "units" in v:
        v["units"] = _units(str(v["units"]))


def parse_eps(text: str) -> list[float]:
    """'0.01,0.03' -> [0.01, 0.03]: each a number in [0, 1], sorted, no repeats."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            eps = float(part)
        except ValueError:
            raise DlrunError(f"eps: '{part}' is not a number", EPS_HINT) from None
        if not 0 <= eps <= 1:
            raise DlrunError(f"eps: {part} lies outside [0, 1]", EPS_HINT)
        out.append(eps)
    return sorted(set(out))


def _units(text: str) -> int | list[int]:
    """units=8 (a count) or units=3,7,12 (those units)."""
    try:
        numbers = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise DlrunError(f"units: '{text}' is neither a count nor a list of unit numbers",
                         "units=8 or units=3,7,12") from None
    if not numbers or min(numbers) < 0 or ("," not in text and numbers[0] == 0):
        raise DlrunError(f"units: '{text}' is neither a count nor a list of unit numbers", "units=8 or units=3,7,12")
    return numbers if "," in text else numbers[0]
