"""How the sequence task represents its target: a Box-Cox transform and a differencing base,
both chosen on the training/validation part, as forecasters do before fitting a model.

- transform (`task.transform`): `log` or Box-Cox when every value is positive and the spread
  grows with the level (Guerrero's lambda from statsmodels: near 0 -> log, near 1 -> none);
- difference (`task.difference`): the network forecasts the residual to a simple forecast in
  the transformed units: `none` (the training mean), `first` (the last value: differencing),
  `seasonal` (the value one season back: seasonal differencing) or `both` (one season back
  plus the last seasonal change). `auto` takes the one with the lowest validation MAE in the
  user's units: differencing is kept when a trend or season makes it pay.

Every base is a fixed linear map of the window's transformed target (`base_matrix`), so the
served model computes it with the same numbers (dlrun/models/_series_layers.py). Targets are
divided by the spread of the training residuals, so the network learns unit-scale corrections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dlrun.errors import DlrunError

TRANSFORMS = ("auto", "none", "log", "boxcox")
DIFFERENCES = ("auto", "none", "first", "seasonal", "both")
LOG_BELOW, NONE_ABOVE = 0.15, 0.85  # Guerrero lambda in [0, 1]: near 0 is a log, near 1 no transform


@dataclass
class TargetPlan:
    """The chosen target representation: z = boxcox(y, lmbda) (None: z = y), then
    encoded = (z_future - (z_window @ matrix + offset)) / scale."""

    lmbda: float | None = None
    difference: str = "none"
    season: int | None = None
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((1, 1)))  # (window, horizon)
    offset: float = 0.0
    scale: float = 1.0
    step_scale: float | None = None  # inputs get a window-relative channel divided by this (None: not)
    level: tuple = (1.0, 0.0)  # the target's input column: boxcox(y) * a + b (data.scale fitted on z)
    val_mae: dict = field(default_factory=dict)  # difference candidate -> validation MAE (auto)
    why_transform: str = ""
    why_difference: str = ""

    @property
    def transform(self) -> str:
        return "none" if self.lmbda is None else "log" if self.lmbda == 0 else f"boxcox({self.lmbda:.2f})"


def boxcox(y, lmbda: float | None) -> np.ndarray:
    from scipy.special import boxcox as bc

    y = np.asarray(y, dtype=float)
    return y if lmbda is None else bc(y, lmbda)


def inv_boxcox(z, lmbda: float | None) -> np.ndarray:
    from scipy.special import inv_boxcox as ibc

    z = np.asarray(z, dtype=float)
    return z if lmbda is None else ibc(z, lmbda)


def choose_lambda(y_fit: np.ndarray, season: int | None, setting: str) -> tuple[float | None, str]:
    """(lambda or None, why) from `task.transform` and the values it may look at."""
    if setting not in TRANSFORMS:
        raise DlrunError(f"task.transform: unknown value '{setting}'", f"valid: {', '.join(TRANSFORMS)}")
    y_fit = np.asarray(y_fit, dtype=float)
    positive = bool(len(y_fit)) and float(y_fit.min()) > 0
    if setting == "none":
        return None, "task.transform=none"
    if setting in ("log", "boxcox") and not positive:
        raise DlrunError(f"task.transform={setting} needs positive values; the target's smallest is {y_fit.min():g}",
                         "use task.transform=none (or auto), or shift the series")
    if setting == "log":
        return 0.0, "task.transform=log"
    if not positive:
        return None, "values not all positive"
    from statsmodels.base.transform import BoxCox

    window = season if season and season >= 2 and len(y_fit) >= 4 * season else 4
    _, guerrero = BoxCox().transform_boxcox(y_fit, method="guerrero", window_length=window, bounds=(-1, 2))
    lmbda = float(np.clip(guerrero, 0, 1))
    if setting == "boxcox":
        return lmbda, f"Guerrero lambda {lmbda:.2f} (window {window})"
    if lmbda < LOG_BELOW:
        return 0.0, f"spread grows with the level (Guerrero lambda {lmbda:.2f}): log"
    if lmbda > NONE_ABOVE:
        return None, f"spread does not grow with the level (Guerrero lambda {lmbda:.2f})"
    return round(lmbda, 2), f"spread grows with the level (Guerrero lambda {lmbda:.2f}): Box-Cox"


def base_matrix(window: int, horizon: int, difference: str, season: int | None) -> np.ndarray | None:
    """(window, horizon) M with base = z_window @ M for each forecast step k = 1..horizon, or None
    when the window is too short for that base. Window position window-1 is the last value t.

    first: z[t]; seasonal: z[t + k - s * ceil(k / s)] (the same season point last season);
    both: seasonal + z[t] - z[t - s] (seasonal naive plus the last seasonal change).
    """
    m = np.zeros((window, horizon))
    last = window - 1
    if difference == "none":
        return m
    if difference == "first":
        m[last, :] = 1.0
        return m
    if not season or season < 2:
        return None
    need = season + (1 if difference == "both" else 0)
    if window < need:
        return None
    for k in range(1, horizon + 1):
        m[last + k - season * -(-k // season), k - 1] += 1.0
        if difference == "both":
            m[last, k - 1] += 1.0
            m[last - season, k - 1] -= 1.0
    return m


def _windows(z: np.ndarray, starts: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(z windows (n, window), z targets (n, horizon)) for windows starting at `starts`."""
    view = np.lib.stride_tricks.sliding_window_view
    if not len(starts):
        return np.zeros((0, window)), np.zeros((0, horizon))
    return view(z, window)[starts], view(z, horizon)[starts + window]


def plan(y: np.ndarray, bounds: dict, window: int, horizon: int, season: int | None,
         transform: str = "auto", difference: str = "auto", scale: str = "standard") -> TargetPlan:
    """Choose the target representation from the training part (transform, scale) and the
    validation part (difference, when `auto`). `y` is the whole target in the user's units;
    nothing past the validation part is read. With difference `none` the target is scaled like
    the inputs (`scale`, data.scale: the course's plain network with `none`); otherwise the
    residuals are divided by their training spread and the inputs get the window-relative
    channel (`step_scale`)."""
    if difference not in DIFFERENCES:
        raise DlrunError(f"task.difference: unknown value '{difference}'", f"valid: {', '.join(DIFFERENCES)}")
    n_train = bounds["train"][1]
    v_lo, v_hi = bounds["val"]
    y = np.asarray(y, dtype=float)[:v_hi]
    lmbda, why_transform = choose_lambda(y[:v_hi], season, transform)
    z = boxcox(y, lmbda)
    train_starts = np.arange(0, n_train - window - horizon + 1)
    val_starts = np.arange(max(0, v_lo - window), v_hi - window - horizon + 1)
    zw_tr, zy_tr = _windows(z, train_starts, window, horizon)
    zw_va, zy_va = _windows(z, val_starts, window, horizon)
    candidates = [difference] if difference != "auto" else ["none", "first", "seasonal", "both"]
    errors = {}
    for d in candidates:
        m = base_matrix(window, horizon, d, season)
        if m is None:
            if difference != "auto":
                raise DlrunError(f"task.difference={d} needs a season and data.window >= "
                                 f"{(season or 0) + (d == 'both')} (window {window}, season {season})",
                                 "set data.season / a longer data.window, or task.difference=first")
            continue
        offset = float(zy_tr.mean()) if d == "none" else 0.0
        if len(zw_va):
            pred = inv_boxcox(zw_va @ m + offset, lmbda)
            errors[d] = float(np.mean(np.abs(inv_boxcox(zy_va, lmbda) - pred)))
    if difference == "auto":
        chosen = min(errors, key=errors.get) if errors else "first"
        why = ("lowest validation MAE of the simple forecasts: " + ", ".join(f"{d} {v:.4g}" for d, v in errors.items())
               if errors else "no validation part to choose on")
    else:
        chosen, why = difference, f"task.difference={difference}"
    m = base_matrix(window, horizon, chosen, season)
    from dlrun.data.series import affine, make_scaler

    scaler = make_scaler(scale)
    if scaler is not None:
        scaler.fit(z[:n_train, None])
    a, b = (float(v[0]) for v in affine(scaler, 1))
    if chosen == "none":  # the target scaled as its input column
        return TargetPlan(lmbda, chosen, season, m, -b / a, 1.0 / a, None, (a, b), errors, why_transform, why)
    residual = zy_tr - zw_tr @ m
    spread = float(residual.std()) if len(residual) and residual.std() > 0 else 1.0
    steps = np.diff(z[:n_train])
    step_scale = float(steps.std() * np.sqrt(window)) if len(steps) and steps.std() > 0 else 1.0
    return TargetPlan(lmbda, chosen, season, m, 0.0, spread, step_scale, (a, b), errors, why_transform, why)


def inputs_model(shape: tuple, a, b, target_index: int | None, plan: TargetPlan):
    """Raw windows -> the network's inputs, as a Keras model (the served model's first part): each
    column scaled by (a, b), the target's column transformed first and scaled by plan.level."""
    import keras

    from dlrun.models._series_layers import ForecastInputs

    a, b = [float(v) for v in a], [float(v) for v in b]
    if target_index is not None:
        a[target_index], b[target_index] = plan.level
    inputs = keras.Input(shape=shape, name="window")
    layer = ForecastInputs(a, b, target_index, plan.lmbda,
                           plan.step_scale if target_index is not None else None, name="scale", dtype="float32")
    return keras.Model(inputs, layer(inputs), name="preprocess")


def encode(plan: TargetPlan, z_windows: np.ndarray, z_targets: np.ndarray) -> np.ndarray:
    """Targets (transformed units) -> what the network learns."""
    return (z_targets - (z_windows @ plan.matrix + plan.offset)) / plan.scale


def decode(plan: TargetPlan, raw_windows: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Network outputs -> forecasts in the user's units (the served model does the same in Keras)."""
    z = boxcox(raw_windows, plan.lmbda)
    return inv_boxcox(outputs * plan.scale + z @ plan.matrix + plan.offset, plan.lmbda)
