"""Time series sources and the window pipeline of the sequence task (course Day 2).

Sources (DATA registry, tag "sequence") return a `Series`: a numeric pandas frame in time
order plus the target column. `prepare` turns it into model inputs: a chronological
train/val/test split (never shuffled across the split), a scaler fitted on the training part
only, and windows of `window` past steps -> the next `horizon` target values, cut with
`keras.utils.timeseries_dataset_from_array`. Validation and test windows may look back into
the previous part for their inputs (those are past values), but their targets never leave
their own part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import DlrunError, did_you_mean
from dlrun.registry import DATA

SCALERS = ("standard", "minmax", "none")


@dataclass
class Series:
    """A numeric series in time order: `frame` (one column per variable, index = time or
    step) and the column to forecast."""

    frame: Any  # pandas.DataFrame of floats
    target: str
    source: str = ""
    name: str = ""  # what the data is called in MLflow (file stem or generator)
    season: int | None = None  # the seasonal period when the source knows it (generators)


@dataclass
class Windows:
    """The windows of one split: model arrays (scaled) and what the report needs (raw)."""

    x: np.ndarray  # (n, window, features), scaled
    y: np.ndarray  # (n, horizon), scaled
    y_raw: np.ndarray  # (n, horizon), original units
    history: np.ndarray  # (n, window), the target's past values in original units (baselines)
    time: np.ndarray  # (n,), time (or step) of each window's first target
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (n,) row of each first target
    raw: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1)))  # (n, window, features), original units


# -- sources ------------------------------------------------------------------------------


@DATA.register("synthetic_series", "Generated series: level + trend + seasonality + noise (embedded)",
               tags=("sequence",))
def synthetic_series(data_cfg) -> Series:
    """Deterministic synthetic series: level + trend * t + sum of sines + Gaussian noise.

    `growth` makes the trend line compound: (level + trend * t) * exp(growth * t).
    `multiplicative: true` scales the seasonal terms and the noise by the trend line (amplitudes
    and noise are then fractions of it, as in sales or passenger counts that grow). `start` + `freq` (a pandas
    frequency such as MS for month starts) give the series calendar dates. `covariates: true`
    adds the sine and cosine of the first seasonal phase as extra columns (known calendar
    features), which makes the inputs multivariate.
    """
    import pandas as pd

    length = int(data_cfg.length)
    periods = [float(p) for p in data_cfg.get("season_periods") or []]
    amplitudes = [float(a) for a in data_cfg.get("season_amplitudes") or []]
    if len(periods) != len(amplitudes):
        raise DlrunError(
            f"data.season_periods has {len(periods)} entries but data.season_amplitudes has {len(amplitudes)}",
            "give one amplitude per period",
        )
    if length < 2:
        raise DlrunError(f"data.length must be >= 2, got {length}")
    if any(p <= 0 for p in periods):
        raise DlrunError(f"data.season_periods must be > 0, got {periods}")
    t = np.arange(length, dtype=float)
    line = (float(data_cfg.level) + float(data_cfg.trend) * t) * np.exp(float(data_cfg.growth) * t)
    seasonal = sum((a * np.sin(2 * np.pi * t / p) for p, a in zip(periods, amplitudes, strict=True)),
                   np.zeros(length))
    multiplicative = bool(data_cfg.multiplicative)
    values = line * (1.0 + seasonal) if multiplicative else line + seasonal
    noise = float(data_cfg.noise)
    if noise:
        shocks = np.random.default_rng(int(data_cfg.seed)).normal(0.0, noise, length)
        values = values + (shocks * line if multiplicative else shocks)
    columns = {"value": values}
    if data_cfg.covariates:
        if not periods:
            raise DlrunError("data.covariates needs at least one seasonal period", "set data.season_periods")
        columns["season_sin"] = np.sin(2 * np.pi * t / periods[0])
        columns["season_cos"] = np.cos(2 * np.pi * t / periods[0])
    if data_cfg.get("start"):
        try:
            index = pd.date_range(str(data_cfg.start), periods=length, freq=str(data_cfg.get("freq") or "D"),
                                  name="date")
        except (ValueError, TypeError) as e:
            raise DlrunError(f"data.start/data.freq: {str(e).splitlines()[0]}", "e.g. start=2005-01-01 freq=MS") \
                from None
    else:
        index = pd.RangeIndex(length, name="step")
    frame = pd.DataFrame(columns, index=index)
    spec = (f"dlrun:{data_cfg.name}?length={length}&level={data_cfg.level}"
            f"&trend={data_cfg.trend}&growth={data_cfg.growth}&periods={periods}"
            f"&amplitudes={amplitudes}"
            f"&multiplicative={bool(data_cfg.multiplicative)}&noise={noise}&seed={data_cfg.seed}")
    season = int(periods[0]) if periods and float(periods[0]).is_integer() else None
    return Series(frame, str(data_cfg.target), spec, name=str(data_cfg.name), season=season)


DATA.register("monthly_sales", "Monthly series, strong trend + yearly multiplicative seasonality (embedded)",
              tags=("sequence",))(synthetic_series)


@DATA.register("arithmetic", "The course's next-number series 10, 20, 30, ... (embedded)", tags=("sequence",))
def arithmetic(data_cfg) -> Series:
    """start, start + step, ... (`length` values): the course's [10, 20, ..., 90] example."""
    import pandas as pd

    length = int(data_cfg.length)
    if length < 2:
        raise DlrunError(f"data.length must be >= 2, got {length}")
    values = float(data_cfg.start) + float(data_cfg.step) * np.arange(length, dtype=float)
    frame = pd.DataFrame({"value": values}, index=pd.RangeIndex(length, name="step"))
    return Series(frame, "value", f"dlrun:arithmetic?start={data_cfg.start}&step={data_cfg.step}&length={length}",
                  name="arithmetic")


def _date_column(raw):
    """time_column=auto: the first column when it is text that parses as dates in every row."""
    import warnings

    import pandas as pd

    first = raw.columns[0]
    col = raw[first]
    if pd.api.types.is_numeric_dtype(col) or len(raw.columns) < 2:
        return None
    with warnings.catch_warnings():  # "could not infer format": the check is all-or-nothing anyway
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(col, errors="coerce")
    return first if parsed.notna().all() else None


@DATA.register("csv_series", "A CSV time series: optional time column, value columns, target", tags=("sequence",))
def csv_series(data_cfg) -> Series:
    """Read a CSV series; sort by `time_column` when given, else keep the file's row order.

    Every used column must be numeric: a bad cell is a DlrunError naming the file, the column
    and the line. Columns may be named or given by index (header: false names them c0, c1, ...).
    """
    import pandas as pd
    from omegaconf import OmegaConf

    from dlrun.data.csv import column, read_csv, strictly_numeric

    for key in ("path", "target"):
        if OmegaConf.is_missing(data_cfg, key) or data_cfg.get(key) is None:
            raise DlrunError(f"data.{key} is required for data=csv_series", f"add data.{key}=...")
    path = Path(str(data_cfg.path)).expanduser()
    raw = read_csv(path, sep=data_cfg.sep, header=bool(data_cfg.header), min_columns=1,
                   encoding=data_cfg.get("encoding"))
    time_col = data_cfg.time_column
    if time_col == "auto":
        time_col = _date_column(raw)
    else:
        time_col = column(raw, time_col, path, "data.time_column") if time_col is not None else None
    target = column(raw, data_cfg.target, path, "data.target")
    features = data_cfg.get("features")
    used = [column(raw, c, path, "data.features") for c in features] if features is not None \
        else [c for c in raw.columns if c != time_col]
    if target not in used:
        used.append(target)

    missing = str(data_cfg.missing)
    if missing not in ("error", "ffill", "interpolate"):
        raise DlrunError(f"data.missing: unknown value '{missing}'", "valid: error, ffill, interpolate")
    frame = pd.DataFrame(index=raw.index)
    for c in used:
        numeric = strictly_numeric(raw[c], c, path)
        if numeric.isna().any():
            if missing == "error":
                from dlrun.data.csv import first_empty

                first_empty(numeric, c, path, "fill it, or set data.missing=ffill or data.missing=interpolate")
            numeric = numeric.ffill().bfill() if missing == "ffill" else numeric.interpolate(limit_direction="both")
        frame[c] = numeric.astype(float)
    if time_col is not None:
        parsed = pd.to_datetime(raw[time_col], errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if len(bad):
            line = int(bad[0]) + int(raw.attrs.get("first_line", 2))
            raise DlrunError(f"{path}: column '{time_col}' is not a date/time at line {line} "
                             f"({raw[time_col].iloc[int(bad[0])]!r})",
                             "use ISO dates such as 2024-01-31, or drop data.time_column")
        frame.index = pd.DatetimeIndex(parsed, name=str(time_col))
        frame = one_row_per_time(frame, raw[time_col], path, str(data_cfg.duplicates),
                                 int(raw.attrs.get("first_line", 2)))
        frame = frame.sort_index(kind="stable")
    else:
        frame.index = pd.RangeIndex(len(frame), name="row")
    return Series(frame, target, str(path), name=path.stem)


DUPLICATES = ("error", "mean", "sum", "last")  # data.duplicates: what rows that share one time become


def one_row_per_time(frame, times, path, how: str, first_line: int):
    """One row per time stamp: rows that share one are an error naming the earliest such time
    and its lines (a series has one value per step; the windows and the calendar season would
    be wrong), or are merged by `how` (mean, sum, or the last row in file order)."""
    if how not in DUPLICATES:
        raise DlrunError(f"data.duplicates: unknown value '{how}'", f"valid: {', '.join(DUPLICATES)}")
    index = frame.index
    if not index.has_duplicates:
        return frame
    if how != "error":
        return frame.groupby(level=0, sort=True).agg(how)
    repeated = index[index.duplicated(keep=False)]
    rows = np.flatnonzero(index == repeated.min())
    others = repeated.nunique() - 1
    lines = ", ".join(str(int(r) + first_line) for r in rows)
    raise DlrunError(f"{path}: column '{times.name}' holds {times.iloc[int(rows[0])]!r} on {len(rows)} rows "
                     f"(lines {lines})" + (f", and {others} more time(s) repeat" if others else ""),
                     "keep one row per time, or merge them: data.duplicates=mean, sum or last")


# -- split, scale, window -----------------------------------------------------------------


def split_sizes(n: int, val_size: float, test_size: float) -> tuple[int, int, int]:
    """(train, val, test) step counts: a size < 1 is a fraction of n, a size >= 1 a count."""

    def count(size, key):
        size = float(size or 0)
        if size < 0:
            raise DlrunError(f"data.split.{key} must be >= 0, got {size}")
        return int(round(size * n)) if size < 1 else int(size)

    n_val, n_test = count(val_size, "val_size"), count(test_size, "test_size")
    n_train = n - n_val - n_test
    if n_train <= 0:
        raise DlrunError(f"data.split leaves no training steps ({n} steps, val {n_val}, test {n_test})")
    return n_train, n_val, n_test


def make_scaler(kind: str):
    """A scikit-learn scaler (fitted later on the training part), or None for 'none'."""
    if kind not in SCALERS:
        raise DlrunError(f"data.scale: unknown value '{kind}'", did_you_mean(kind, SCALERS))
    if kind == "none":
        return None
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    return StandardScaler() if kind == "standard" else MinMaxScaler()


def affine(scaler, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (a, b) with scaled = raw * a + b, for any of the supported scalers."""
    if scaler is None:
        return np.ones(n_columns), np.zeros(n_columns)
    if hasattr(scaler, "mean_"):  # StandardScaler
        return 1.0 / scaler.scale_, -scaler.mean_ / scaler.scale_
    return np.asarray(scaler.scale_, dtype=float), np.asarray(scaler.min_, dtype=float)  # MinMaxScaler


def make_windows(x: np.ndarray, y: np.ndarray, window: int, horizon: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows of `window` rows of x, each with the next `horizon` values of y.

    keras.utils.timeseries_dataset_from_array cuts the windows; target i (the horizon
    values after the window starting at row i) is lined up with it here.
    """
    import keras

    count = len(x) - window - horizon + 1
    if count <= 0:
        return np.zeros((0, window, x.shape[1]), "float32"), np.zeros((0, horizon), "float32")
    targets = np.lib.stride_tricks.sliding_window_view(y, horizon)[window:window + count]
    ds = keras.utils.timeseries_dataset_from_array(
        x[:count + window - 1], targets, sequence_length=window, sequence_stride=stride,
        shuffle=False, batch_size=4096,
    )
    xs, ys = zip(*[(xb.numpy(), yb.numpy()) for xb, yb in ds], strict=True)
    return np.concatenate(xs).astype("float32"), np.concatenate(ys).astype("float32")


def window_params(data_cfg) -> tuple[int, int, int]:
    window, horizon, stride = int(data_cfg.window), int(data_cfg.horizon), int(data_cfg.stride)
    for key, value in (("window", window), ("horizon", horizon), ("stride", stride)):
        if value < 1:
            raise DlrunError(f"data.{key} must be >= 1, got {value}")
    return window, horizon, stride


def prepare(series: Series, data_cfg) -> tuple[dict[str, Windows], dict]:
    """Split chronologically, scale on the training part, cut windows per split.

    Returns ({"train"|"val"|"test": Windows}, meta) where meta holds the feature names, the
    fitted scaler, the target's affine map, split boundaries and window sizes.
    """
    frame = series.frame
    if series.target not in frame.columns:
        raise DlrunError(f"data.target: no column '{series.target}'", f"columns: {', '.join(map(str, frame.columns))}")
    features = data_cfg.get("features")
    inputs = [str(c) for c in features] if features is not None else [str(c) for c in frame.columns]
    for c in inputs:
        if c not in frame.columns:
            raise DlrunError(f"data.features: no column '{c}'", f"columns: {', '.join(map(str, frame.columns))}")
    window, horizon, stride = window_params(data_cfg)
    split = data_cfg.get("split") or {}
    n = len(frame)
    n_train, n_val, n_test = split_sizes(n, split.get("val_size", 0.15), split.get("test_size", 0.15))
    if n_train < window + horizon:
        raise DlrunError(
            f"the training part has {n_train} steps, fewer than window + horizon = {window + horizon}",
            "use a longer series, a smaller data.window/horizon or smaller data.split sizes",
        )

    columns = list(dict.fromkeys([*inputs, series.target]))
    raw = frame[columns].to_numpy(dtype=float)
    scaler = make_scaler(str(data_cfg.scale))
    if scaler is not None:
        scaler.fit(raw[:n_train])  # the training part only: no future statistics leak in
    a, b = affine(scaler, len(columns))
    scaled = raw * a + b
    in_idx = [columns.index(c) for c in inputs]
    t_idx = columns.index(series.target)
    times = np.asarray(frame.index)

    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    out = {}
    for name, (start, end) in bounds.items():
        lo = max(0, start - window)  # look back into the previous part for inputs only
        x, y = make_windows(scaled[lo:end, in_idx], scaled[lo:end, t_idx], window, horizon, stride)
        starts = np.arange(len(x)) * stride  # first row of each window, relative to lo
        target = raw[lo:end, t_idx]
        view = np.lib.stride_tricks.sliding_window_view
        out[name] = Windows(
            x=x, y=y,
            y_raw=view(target, horizon)[starts + window] if len(x) else np.zeros((0, horizon)),
            history=view(target, window)[starts] if len(x) else np.zeros((0, window)),
            time=times[lo:end][starts + window],
            index=lo + starts + window,
            raw=view(raw[lo:end, in_idx], window, axis=0).transpose(0, 2, 1)[starts] if len(x)
            else np.zeros((0, window, len(in_idx))),
        )
    meta = {
        "inputs": inputs,
        "target": series.target,
        "columns": columns,
        "scaler": scaler,
        "input_affine": (a[in_idx], b[in_idx]),
        "target_affine": (float(a[t_idx]), float(b[t_idx])),
        "bounds": bounds,
        "window": window,
        "horizon": horizon,
        "stride": stride,
        "target_values": raw[:, t_idx],
    }
    return out, meta


def unscale(values, target_affine) -> np.ndarray:
    """Model outputs (scaled) -> original units of the target."""
    a, b = target_affine
    return (np.asarray(values, dtype=float) - b) / a


# -- baselines ----------------------------------------------------------------------------


def naive_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """Last observed value, repeated over the horizon."""
    return np.repeat(np.asarray(history, dtype=float)[:, -1:], horizon, axis=1)


def moving_average_forecast(history: np.ndarray, horizon: int, k: int) -> np.ndarray:
    """Mean of the last k observed values, repeated over the horizon."""
    history = np.asarray(history, dtype=float)
    if not 1 <= k <= history.shape[1]:
        raise DlrunError(f"moving-average window {k} must be between 1 and data.window = {history.shape[1]}",
                         "set task.moving_average_window")
    return np.repeat(history[:, -k:].mean(axis=1, keepdims=True), horizon, axis=1)


def seasonal_naive_forecast(values: np.ndarray, index: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The value one season before each forecast step: step k (0-based) of the window whose
    first target is row i gets values[i + k - season * (k // season + 1)]. Rows without that
    much history get NaN."""
    values = np.asarray(values, dtype=float)
    k = np.arange(horizon)
    rows = np.asarray(index)[:, None] + k[None, :] - season * (k[None, :] // season + 1)
    out = np.full(rows.shape, np.nan)
    ok = rows >= 0
    out[ok] = values[rows[ok]]
    return out


# calendar periods worth testing per pandas frequency code (the first prefix that matches)
CALENDAR_PERIODS = (("MS", (12,)), ("ME", (12,)), ("M", (12,)), ("QS", (4,)), ("QE", (4,)), ("Q", (4,)),
                    ("W", (52,)), ("B", (5, 260)), ("D", (7, 365)), ("H", (24, 168)))
ACF_PEAK = 0.15  # a season's autocorrelation must exceed the one at half its lag by this much


def infer_season(frame, setting, known: int | None = None, values=None) -> tuple[int | None, str]:
    """(period or None, why) from data.season: an integer, null (off) or auto: the generator's
    period, else a period read from the data among the calendar candidates of the time column's
    frequency (daily 7 and 365, monthly 12, hourly 24 and 168, ...): the candidate whose
    autocorrelation (of `values`, the target's training part) peaks highest above the one at
    half its lag, when it peaks at all and the part holds two such periods. None: no season."""
    import pandas as pd

    if setting is None or str(setting).lower() in ("null", "none", "off", "false"):
        return None, "data.season=null"
    if str(setting) != "auto":
        season = int(setting)
        if season < 1:
            raise DlrunError(f"data.season must be >= 1, auto or null, got {setting}")
        return season, f"data.season={season}"
    if known:
        return int(known), "the generator's period"
    if not isinstance(frame.index, pd.DatetimeIndex) or len(frame) < 3:
        return None, "no dates to take calendar periods from (set data.season)"
    freq = pd.infer_freq(frame.index[:min(len(frame), 1000)])
    code = freq.split("-")[0].upper().lstrip("0123456789") if freq else ""
    candidates = next((periods for prefix, periods in CALENDAR_PERIODS if code.startswith(prefix)), ()) if code else ()
    if not candidates:
        if freq:
            return None, f"no calendar periods for the dates' frequency ({freq}): set data.season"
        broken = _first_break(frame.index[:min(len(frame), 1000)])
        return None, ("dates without a regular frequency: set data.season" if broken is None else
                      f"the dates step by {broken[0]} until {broken[1]}, then {broken[2]} (a gap?): set data.season")
    season = seasonal_peak(values, candidates) if values is not None else None
    listed = ", ".join(map(str, candidates))
    if season is None:
        return None, f"no autocorrelation peak at {listed} (set data.season to force one)"
    return season, f"autocorrelation peak among {listed} (data.season overrides)"


def _first_break(index) -> tuple[str, str, str] | None:
    """(frequency, last date that keeps it, the next date) for dates whose start is regular and
    that break that regularity later; None when not even the first three are regular. A prefix
    that has lost its frequency never gets it back, so the break is found by bisection."""
    import pandas as pd

    if len(index) < 3 or pd.infer_freq(index[:3]) is None:
        return None
    lo, hi = 3, len(index)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if pd.infer_freq(index[:mid]) else (lo, mid)
    shown = [str(t.date()) if t == t.normalize() else str(t) for t in (index[lo - 1], index[lo])]
    return pd.infer_freq(index[:lo]), *shown


def seasonal_peak(values, candidates) -> int | None:
    """The candidate period whose autocorrelation stands highest above the one at half its lag
    (by ACF_PEAK at least), among those the series holds twice; None when none does."""
    from statsmodels.tsa.stattools import acf

    y = np.asarray(values, dtype=float)
    fit = [p for p in candidates if len(y) > 2 * p]
    if not fit or not np.isfinite(y).all():
        return None
    t = np.arange(len(y))
    y = y - np.polyval(np.polyfit(t, y, 1), t)  # a trend alone would make every lag look alike
    if not y.std() > 0:
        return None
    r = acf(y, nlags=max(fit), fft=True)
    peaks = {p: r[p] - r[p // 2] for p in fit if r[p] > 0 and r[p] - r[p // 2] > ACF_PEAK}
    return max(peaks, key=peaks.get) if peaks else None
