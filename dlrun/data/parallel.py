"""Parallel text sources: sentence pairs as a frame with columns `source` and `target`.

dates: an embedded, deterministic corpus of calendar dates written in words in several styles
("the third of march 1987", "march 3, 1987", "3 mar 87", "tuesday 3rd march 1987", ...) and
their ISO form ("1987-03-03"). Getting one right needs real sequence-to-sequence learning: the
order of day, month and year changes with the style, day numbers come as digits, "3rd" or
words ("twenty first"), months as names or abbreviations, years as four or two digits
(two-digit years: 50-99 -> 19xx, 00-49 -> 20xx), and the output is a fixed layout of digits.
Real loader: parallel_text, a header-less tab-separated file of source<TAB>target lines (the
layout of the common sentence-pair downloads, e.g. Tatoeba/Anki `fra.txt`; columns after the
second, such as an attribution, are ignored).

Each source also says how its sides are tokenized (data.source_split / target_split:
whitespace | character, and the TextVectorization standardisation of each side).
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlrun.errors import DlrunError
from dlrun.registry import DATA

TAGS = ("translation",)
MONTHS = [calendar.month_name[i].lower() for i in range(1, 13)]
MONTH_ABBR = [calendar.month_abbr[i].lower() for i in range(1, 13)]
WEEKDAYS = [calendar.day_name[i].lower() for i in range(7)]
_UNITS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"]
_TEENS = ["tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
          "eighteenth", "nineteenth"]
STYLES = ("words", "month_day", "day_month", "short", "ordinal", "weekday", "year_first")
YEARS = (1950, 2049)  # two-digit years are unambiguous in this range


@dataclass
class ParallelTable:
    """Sentence pairs: `frame` has columns source and target; `test` an optional given test frame."""

    frame: object
    name: str
    source: str
    test: object = None
    warnings: list[str] = field(default_factory=list)


def ordinal_words(day: int) -> str:
    """1 -> 'first', 12 -> 'twelfth', 21 -> 'twenty first', 30 -> 'thirtieth'."""
    if day < 10:
        return _UNITS[day - 1]
    if day < 20:
        return _TEENS[day - 10]
    tens, unit = divmod(day, 10)
    word = ("twenty", "thirty")[tens - 2]
    return f"{word} {_UNITS[unit - 1]}" if unit else f"{word[:-1]}ieth"


def ordinal_suffix(day: int) -> str:
    """1 -> '1st', 2 -> '2nd', 11 -> '11th', 23 -> '23rd'."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def date_text(d: dt.date, style: str, rng) -> str:
    """`d` written in words in one of STYLES (month names full or abbreviated at random)."""
    month = (MONTH_ABBR if rng.random() < 0.3 else MONTHS)[d.month - 1]
    year = str(d.year)
    if style == "words":
        return f"the {ordinal_words(d.day)} of {MONTHS[d.month - 1]} {year}"
    if style == "month_day":
        return f"{month} {d.day}, {year}"
    if style == "day_month":
        return f"{d.day} {month} {year}"
    if style == "short":
        return f"{d.day} {MONTH_ABBR[d.month - 1]} {d.year % 100:02d}"
    if style == "ordinal":
        return f"{month} {ordinal_suffix(d.day)} {year}"
    if style == "weekday":
        return f"{WEEKDAYS[d.weekday()]} {ordinal_suffix(d.day)} {month} {year}"
    if style == "year_first":
        return f"{year} {month} {d.day}"
    raise DlrunError(f"date style '{style}' is unknown", f"valid: {', '.join(STYLES)}")


def dates_frame(n: int = 12000, seed: int = 42, styles=STYLES):
    """n (source, target) pairs: a random date in YEARS in a random style -> 'YYYY-MM-DD'."""
    import pandas as pd

    styles = list(styles)
    for s in styles:
        if s not in STYLES:
            raise DlrunError(f"data.styles: unknown style '{s}'", f"valid: {', '.join(STYLES)}")
    if not styles:
        raise DlrunError("data.styles is empty", f"give some of: {', '.join(STYLES)}")
    rng = np.random.default_rng(seed)
    first = dt.date(YEARS[0], 1, 1).toordinal()
    span = dt.date(YEARS[1], 12, 31).toordinal() - first + 1
    days = rng.integers(span, size=n)
    chosen = rng.integers(len(styles), size=n)
    src, tgt = [], []
    for day, s in zip(days, chosen, strict=True):
        d = dt.date.fromordinal(first + int(day))
        src.append(date_text(d, styles[s], rng))
        tgt.append(d.isoformat())
    return pd.DataFrame({"source": src, "target": tgt})


@DATA.register("dates", "Dates written in words in several styles -> ISO YYYY-MM-DD (embedded)", tags=TAGS)
def dates(cfg) -> ParallelTable:
    n, seed = int(cfg.n), int(cfg.seed)
    styles = list(cfg.get("styles") or STYLES)
    return ParallelTable(dates_frame(n, seed, styles), "dates",
                         f"dlrun:dates?n={n}&seed={seed}&styles={','.join(styles)}")


def read_parallel(path, limit: int | None = None):
    """A header-less tab-separated file of source<TAB>target lines as a frame (source, target).

    Read line by line rather than with a CSV reader: sentence pairs contain quotes that a CSV
    reader would treat as quoting, and a line without a tab is reported with its number.
    Blank lines are skipped; columns after the second are ignored.
    """
    import pandas as pd

    p = Path(str(path)).expanduser()
    if not p.exists():
        raise DlrunError(f"parallel text file '{path}' does not exist", "data.path=<source<TAB>target file>")
    if p.is_dir():
        raise DlrunError(f"parallel text file '{path}' is a folder", "data.path=<source<TAB>target file>")
    src, tgt = [], []
    with p.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise DlrunError(f"{p}:{number}: no tab in this line ({line[:40]!r})",
                                 "each line is source<TAB>target")
            src.append(parts[0].strip())
            tgt.append(parts[1].strip())
            if limit and len(src) >= limit:
                break
    if not src:
        raise DlrunError(f"parallel text file '{path}' has no lines", "each line is source<TAB>target")
    return pd.DataFrame({"source": src, "target": tgt})


@DATA.register("parallel_text", "A tab-separated file of source<TAB>target lines (data.path; optional test_path)",
               tags=TAGS)
def parallel_text(cfg) -> ParallelTable:
    if not cfg.get("path"):
        raise DlrunError("data=parallel_text needs data.path", "data.path=<file of source<TAB>target lines>")
    limit = int(cfg.limit) if cfg.get("limit") else None
    test = read_parallel(cfg.test_path) if cfg.get("test_path") else None
    return ParallelTable(read_parallel(cfg.path, limit), Path(str(cfg.path)).stem, str(cfg.path), test)
