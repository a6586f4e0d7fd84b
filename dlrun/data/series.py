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


@dataclass
class Windows:
    """The windows of one split: model arrays (scaled) and what the report needs (raw)."""

    x: np.ndarray  # (n, window, features), scaled
    y: np.ndarray  # (n, horizon), scaled
    y_raw: np.ndarray  # (n, horizon), original units
    history: np.ndarray  # (n, window), the target's past values in original units (baselines)
    time: np.ndarray  # (n,), time (or step) of each window's first target
    extra: dict = field(default_factory=dict)


# -- sources ------------------------------------------------------------------------------


@DATA.register("synthetic_series", "Generated series: level + trend + seasonality + noise (embedded)",
               tags=("sequence",))
def synthetic_series(data_cfg) -> Series:
    """Deterministic synthetic series: level + trend * t + sum of sines + Gaussian noise.

    `covariates: true` adds the sine and cosine of the first seasonal phase as extra columns
    (known calendar features), which makes the inputs multivariate.
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
    values = float(data_cfg.get("level", 0.0)) + float(data_cfg.get("trend", 0.0)) * t
    for period, amplitude in zip(periods, amplitudes, strict=True):
        values = values + amplitude * np.sin(2 * np.pi * t / period)
    noise = float(data_cfg.get("noise", 0.0))
    if noise:
        values = values + np.random.default_rng(int(data_cfg.seed)).normal(0.0, noise, length)
    columns = {"value": values}
    if data_cfg.get("covariates", False):
        if not periods:
            raise DlrunError("data.covariates needs at least one seasonal period", "set data.season_periods")
        columns["season_sin"] = np.sin(2 * np.pi * t / periods[0])
        columns["season_cos"] = np.cos(2 * np.pi * t / periods[0])
    frame = pd.DataFrame(columns, index=pd.RangeIndex(length, name="step"))
    spec = (f"synthetic(length={length}, level={data_cfg.get('level', 0.0)}, trend={data_cfg.get('trend', 0.0)}, "
            f"periods={periods}, amplitudes={amplitudes}, noise={noise}, seed={data_cfg.seed})")
    return Series(frame, str(data_cfg.get("target", "value")), spec)


@DATA.register("arithmetic", "The course's next-number series 10, 20, 30, ... (embedded)", tags=("sequence",))
def arithmetic(data_cfg) -> Series:
    """start, start + step, ... (`length` values): the course's [10, 20, ..., 90] example."""
    import pandas as pd

    length = int(data_cfg.length)
    if length < 2:
        raise DlrunError(f"data.length must be >= 2, got {length}")
    values = float(data_cfg.start) + float(data_cfg.step) * np.arange(length, dtype=float)
    frame = pd.DataFrame({"value": values}, index=pd.RangeIndex(length, name="step"))
    return Series(frame, "value", f"arithmetic(start={data_cfg.start}, step={data_cfg.step}, length={length})")


@DATA.register("csv_series", "A CSV time series: optional time column, value columns, target", tags=("sequence",))
def csv_series(data_cfg) -> Series:
    """Read a CSV series; sort by `time_column` when given, else keep the file's row order.

    Every used column must be numeric: a bad cell is a DlrunError naming the file, the column
    and the row (1-based data row; the header is line 1 of the file).
    """
    import pandas as pd
    from omegaconf import OmegaConf

    for key in ("path", "target"):
        if OmegaConf.is_missing(data_cfg, key) or data_cfg.get(key) is None:
            raise DlrunError(f"data.{key} is required for data=csv_series", f"add data.{key}=...")
    path = Path(str(data_cfg.path)).expanduser()
    if not path.is_file():
        raise DlrunError(f"{path}: file not found", "set data.path to a CSV file")
    try:
        raw = pd.read_csv(path, sep=str(data_cfg.get("sep", ",")))
    except Exception as e:  # pandas raises several types for unreadable files
        raise DlrunError(f"{path}: cannot read CSV ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    if raw.empty:
        raise DlrunError(f"{path}: no data rows")
    columns = list(raw.columns)

    def need(name, key):
        if name not in columns:
            raise DlrunError(f"{path}: no column '{name}' ({key})", f"columns: {', '.join(columns)}")

    time_col = data_cfg.get("time_column")
    target = str(data_cfg.target)
    need(target, "data.target")
    if time_col is not None:
        need(str(time_col), "data.time_column")
    features = data_cfg.get("features")
    used = [str(c) for c in features] if features is not None else [c for c in columns if c != time_col]
    for c in used:
        need(c, "data.features")
    if target not in used:
        used.append(target)

    missing = str(data_cfg.get("missing", "error"))
    if missing not in ("error", "ffill", "interpolate"):
        raise DlrunError(f"data.missing: unknown value '{missing}'", "valid: error, ffill, interpolate")
    frame = pd.DataFrame(index=raw.index)
    for c in used:
        numeric = pd.to_numeric(raw[c], errors="coerce")
        bad = numeric.isna() & raw[c].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DlrunError(f"{path}: column '{c}' has a non-numeric value {raw[c].iloc[row]!r} at line {row + 2}",
                             "every feature and target column must be numeric")
        if numeric.isna().any():
            if missing == "error":
                row = int(np.flatnonzero(numeric.isna().to_numpy())[0])
                raise DlrunError(f"{path}: column '{c}' has an empty value at line {row + 2}",
                                 "fill it, or set data.missing=ffill or data.missing=interpolate")
            numeric = numeric.ffill().bfill() if missing == "ffill" else numeric.interpolate(limit_direction="both")
        frame[c] = numeric.astype(float)
    if time_col is not None:
        try:
            times = pd.to_datetime(raw[time_col], errors="raise")
        except (ValueError, TypeError) as e:
            parsed = pd.to_datetime(raw[time_col], errors="coerce")
            bad = np.flatnonzero(parsed.isna().to_numpy())
            where = f" at line {int(bad[0]) + 2} ({raw[time_col].iloc[int(bad[0])]!r})" if len(bad) else ""
            raise DlrunError(f"{path}: column '{time_col}' is not a date/time{where}", str(e).splitlines()[0]) from None
        frame.index = pd.DatetimeIndex(times, name=str(time_col))
        frame = frame.sort_index(kind="stable")
    else:
        frame.index = pd.RangeIndex(len(frame), name="row")
    return Series(frame, target, str(path))


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
    window, horizon, stride = int(data_cfg.window), int(data_cfg.get("horizon", 1)), int(data_cfg.get("stride", 1))
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
    scaler = make_scaler(str(data_cfg.get("scale", "standard")))
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
