"""Reading CSV files: one reader, one wording of its errors, for every task that takes a table.

`sep: auto` sniffs the separator among `,` `;` tab `|` (csv.Sniffer on the first lines, then
the separator that splits every sampled line into the same number of fields); `header: false`
names the columns c0, c1, ...; a target may be named by column or by integer index (negative
counts from the end). Errors name the file, the column and the line.
"""

from __future__ import annotations

import codecs
import csv as _csv
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from dlrun.errors import DlrunError


@dataclass(frozen=True)
class FileOptions:
    """How a user's own file is read for dlrun eval / predict (and by the sources that share the
    readers): the run's data config where it has the key (a run trained on a CSV reads the next
    CSV the same way), else these values, the one place they are written for files read outside
    a data source's option file."""

    sep: str = "auto"
    header: bool = True
    encoding: str | None = None
    text_column: str | int = "text"
    label_column: str | int | None = "label"
    skip_bad_files: bool = False
    on_bad_box: str = "skip"
    palette: str | None = None

    @classmethod
    def of(cls, data_cfg) -> FileOptions:
        """The options of `data_cfg` (a config node, a dict, or None for none)."""
        data_cfg = data_cfg if data_cfg is not None else {}
        return cls(**{f.name: data_cfg.get(f.name, f.default) for f in fields(cls)})

SEPARATORS = {",": ",", ";": ";", "tab": "\t", "\\t": "\t", "\t": "\t", "|": "|"}


def sniff_separator(path: Path, sample_bytes: int = 64_000, encoding: str = "utf-8") -> str:
    """The field separator of a text table: csv.Sniffer restricted to , ; tab |, checked by
    consistency (every sampled line splits into the same number of fields > 1)."""
    with open(path, newline="", encoding=encoding, errors="replace") as f:
        sample = f.read(sample_bytes)
    lines = [ln for ln in sample.splitlines()[:50] if ln.strip()]
    if len(sample) == sample_bytes and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut off
    try:
        sniffed = _csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except _csv.Error:
        sniffed = None
    best, best_fields = ",", 1
    for sep in ([sniffed] if sniffed else []) + [",", ";", "\t", "|"]:
        counts = {len(next(_csv.reader([ln], delimiter=sep))) for ln in lines}
        if len(counts) == 1 and (n := counts.pop()) > best_fields:
            best, best_fields = sep, n
            if sep == sniffed:
                break
    return best


def separator(path: Path, sep, encoding: str = "utf-8") -> str:
    """data.sep as a one-character separator: auto, a name (tab) or the character itself."""
    sep = "auto" if sep is None else str(sep)
    if sep == "auto":
        return sniff_separator(path, encoding=encoding)
    if sep in SEPARATORS:
        return SEPARATORS[sep]
    if len(sep) == 1:
        return sep
    raise DlrunError(f"data.sep: '{sep}' is not a separator", "use auto, ',', ';', tab or '|'")


def read_csv(path, sep="auto", header: bool = True, min_columns: int = 2, encoding: str | None = None):
    """pandas.read_csv with one-line errors for the usual ways a file is wrong. `encoding` is
    data.encoding (None: a run logged before that key, whose files were read as UTF-8)."""
    import pandas as pd

    encoding = str(encoding or "utf-8")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DlrunError(f"data.encoding: unknown text encoding '{encoding}'",
                         "e.g. utf-8, latin-1, cp1252, utf-16") from None

    p = Path(str(path)).expanduser()
    if not p.exists():
        raise DlrunError(f"CSV file '{path}' does not exist")
    if p.is_dir():
        raise DlrunError(f"CSV file '{path}' is a folder, not a file")
    if p.stat().st_size == 0:
        raise DlrunError(f"CSV file '{path}' is empty")
    sep_char = separator(p, sep, encoding)
    try:
        frame = pd.read_csv(p, sep=sep_char, header=0 if header else None, skipinitialspace=True, encoding=encoding)
    except pd.errors.EmptyDataError:
        raise DlrunError(f"CSV file '{path}' is empty") from None
    except UnicodeDecodeError as e:
        line, bad = undecodable_line(p, encoding)
        where = f"line {line} has byte 0x{bad:02x}" if line else str(e).splitlines()[0][:200]
        raise DlrunError(f"CSV file '{path}' is not {encoding} text: {where}",
                         "name its encoding: data.encoding=latin-1 (or cp1252, utf-16, ...)") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise DlrunError(f"CSV file '{path}' cannot be parsed: {str(e).splitlines()[0]}") from None
    frame.attrs["first_line"] = 2 if header else 1  # file line of the first data row
    if not header:
        frame.columns = [f"c{i}" for i in range(frame.shape[1])]
    else:
        frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty or len(frame.columns) < min_columns:
        shown = {"\t": "tab"}.get(sep_char, sep_char)
        raise DlrunError(f"CSV file '{path}' has no data rows or fewer than {min_columns} columns",
                         f"separator used: '{shown}' (data.sep={sep}); header: {header}")
    return frame


def undecodable_line(path: Path, encoding: str) -> tuple[int | None, int | None]:
    """(file line, first byte) of the first line that `encoding` cannot decode; (None, None)
    when no single line fails (an encoding whose characters span lines, such as UTF-16)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as e:
                return number, raw[e.start]
    return None, None


def column(frame, key, path, what: str = "data.target") -> str:
    """A column named by `key`: its name, or an integer index (negative counts from the end)."""
    columns = [str(c) for c in frame.columns]
    name = str(key)
    if name in columns:
        return name
    try:
        index = int(name)
    except ValueError:
        index = None
    if index is not None and -len(columns) <= index < len(columns):
        return columns[index]
    hint = f"columns: {', '.join(columns)}"
    if frame.attrs.get("first_line") == 2 and looks_like_data(columns):
        hint = (f"the first row ({', '.join(columns[:4])}{', ...' if len(columns) > 4 else ''}) looks like data, "
                f"not column names: add data.header=false and name columns by index (e.g. {what}=-1)")
    raise DlrunError(f"{path}: no column '{key}' ({what})", hint)


def looks_like_data(names: list[str]) -> bool:
    """Whether column names read from a first row are values rather than names: most of them
    are numbers (pandas writes a repeated name as 'x.1', so such a copy counts as its value)."""
    import re

    def number(name: str) -> bool:
        try:
            float(re.sub(r"\.\d+$", "", name) if name.count(".") > 1 else name)
            return True
        except ValueError:
            return False

    return len(names) > 1 and sum(number(n) for n in names) * 2 >= len(names)


def numeric(col, name: str, path, max_bad: float = 0.2):
    """A column as numbers. A mostly-numeric column with a few non-numbers is junk: an error
    naming the column and the file line (the header is line 1). Text columns stay text."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(col):
        return col
    parsed = pd.to_numeric(col, errors="coerce")
    bad = parsed.isna() & col.notna()
    if bad.any() and bad.mean() <= max_bad and parsed.notna().sum() > 0:
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DlrunError(f"{path}: column '{name}' has a non-numeric value {col.iloc[row]!r} at line {_line(col, row)}",
                         "fix the file or list the column in data.categorical")
    return parsed if not bad.any() else col.where(col.isna(), col.astype(str))  # an empty cell stays empty


def strictly_numeric(col, name: str, path):
    """A column that must be numbers (series values): any non-number is an error."""
    import pandas as pd

    parsed = pd.to_numeric(col, errors="coerce")
    bad = parsed.isna() & col.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dates = pd.to_datetime(col, errors="coerce").notna().mean() > 0.5
        hint = (f"a date column? name it with data.time_column={name} (values must all be dates)" if dates
                else "every feature and target column must be numeric")
        raise DlrunError(f"{path}: column '{name}' has a non-numeric value {col.iloc[row]!r} at line {_line(col, row)}",
                         hint)
    return parsed


def first_empty(col, name: str, path, hint: str):
    """An error naming the first empty cell of `col`, if it has one."""
    if col.isna().any():
        row = int(np.flatnonzero(col.isna().to_numpy())[0])
        raise DlrunError(f"{path}: column '{name}' has an empty value at line {_line(col, row)}", hint)


def _line(col, row: int) -> int:
    """File line of positional row `row` (index labels are the rows as read from the file)."""
    first = int(col.attrs.get("first_line", 2))
    label = col.index[row]
    return int(label) + first if isinstance(label, int | np.integer) else row + first
