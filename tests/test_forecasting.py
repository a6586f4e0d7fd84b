"""The sequence task's target representation (transform, differencing), the seasonal period read
from the data, and the served model's layers that carry them (issue 19)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlrun.data import forecasting as F
from dlrun.data.series import infer_season, seasonal_peak
from dlrun.errors import DlrunError

RNG = np.random.default_rng(0)


def bounds(n: int, n_val: int, n_test: int) -> dict:
    return {"train": (0, n - n_val - n_test), "val": (n - n_val - n_test, n - n_test), "test": (n - n_test, n)}


def airline_like(n: int = 144) -> np.ndarray:
    """Monthly, growing trend, yearly season whose swing grows with the level, noise in proportion."""
    t = np.arange(n)
    return (100 + 3 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) * np.exp(RNG.normal(0, 0.02, n))


# -- transform ----------------------------------------------------------------------------


def test_a_multiplicative_season_picks_log_and_a_constant_spread_picks_none():
    y = airline_like()
    lmbda, why = F.choose_lambda(y[:100], 12, "auto")
    assert lmbda == 0.0 and "log" in why
    t = np.arange(144)
    additive = 500 + 3 * t + 30 * np.sin(2 * np.pi * t / 12) + RNG.normal(0, 3, 144)
    assert F.choose_lambda(additive[:100], 12, "auto")[0] is None
    assert F.choose_lambda(additive - 600, 12, "auto") == (None, "values not all positive")
    assert F.choose_lambda(y, 12, "none")[0] is None and F.choose_lambda(y, 12, "log")[0] == 0.0
    with pytest.raises(DlrunError, match="task.transform=log needs positive values"):
        F.choose_lambda(additive - 600, 12, "log")
    with pytest.raises(DlrunError, match="unknown value 'sqrt'"):
        F.choose_lambda(y, 12, "sqrt")


def test_difference_is_chosen_by_validation_error():
    n = 300
    t = np.arange(n)
    trend = 10 + 0.5 * t + RNG.normal(0, 0.3, n)  # a trend, no season: the last value is the best simple forecast
    p = F.plan(trend, bounds(n, 45, 45), window=24, horizon=1, season=None, transform="none")
    assert p.difference == "first" and set(p.val_mae) == {"none", "first"}
    seasonal = airline_like()  # log, then a season: one season back (+ the last seasonal change) wins
    p = F.plan(seasonal, bounds(144, 22, 22), window=24, horizon=1, season=12)
    assert p.transform == "log" and p.difference in ("seasonal", "both")
    assert p.val_mae[p.difference] < p.val_mae["first"] < p.val_mae["none"]
    noise = 50 + RNG.normal(0, 1, n)  # no trend, no season: the mean
    assert F.plan(noise, bounds(n, 45, 45), 24, 1, None, "none").difference == "none"
    with pytest.raises(DlrunError, match="needs a season and data.window >= 13"):
        F.plan(seasonal, bounds(144, 22, 22), 12, 1, 12, difference="both")


def test_base_matrix_picks_last_value_season_back_and_both():
    z = np.arange(30.0)[None, :] ** 2  # one window of 30 values, z[t] = t^2
    last, s = 29, 7
    assert (z @ F.base_matrix(30, 3, "first", s)).tolist() == [[last**2] * 3]
    season = z @ F.base_matrix(30, 9, "seasonal", s)  # step k: t + k - 7 * ceil(k / 7)
    assert season[0].tolist() == [(last + k - s * -(-k // s)) ** 2 for k in range(1, 10)]
    both = z @ F.base_matrix(30, 2, "both", s)
    assert both[0].tolist() == [(last + k - s) ** 2 + last**2 - (last - s) ** 2 for k in (1, 2)]
    assert F.base_matrix(6, 1, "seasonal", 7) is None and F.base_matrix(30, 1, "seasonal", None) is None


def test_encode_decode_round_trip_and_the_served_layers_agree_and_reload(tmp_path):
    import keras

    y = airline_like()
    p = F.plan(y, bounds(144, 22, 22), window=24, horizon=3, season=12)
    view = np.lib.stride_tricks.sliding_window_view
    windows, futures = view(y, 24)[:100], view(y, 3)[24:124]
    encoded = F.encode(p, F.boxcox(windows, p.lmbda), F.boxcox(futures, p.lmbda))
    assert np.allclose(F.decode(p, windows, encoded), futures)
    assert encoded[: 100 - 24 - 3 + 1].std() == pytest.approx(1.0)  # training residuals: unit scale

    from dlrun.models._series_layers import ForecastOutputs

    pre = F.inputs_model((24, 2), [0.01, 0.5], [-1.0, 0.0], 0, p)  # the target and another column
    x = np.stack([windows, windows], axis=-1).astype("float32")
    net_in = np.asarray(pre(x))
    assert net_in.shape == (100, 24, 3)
    z = np.log(windows)
    level_a, level_b = p.level
    assert abs(np.mean(np.log(y[:100]) * level_a + level_b)) < 1e-9  # standardised on the training part
    assert np.allclose(net_in[..., 0], z * level_a + level_b, atol=1e-4)  # the target's level, transformed
    assert np.allclose(net_in[..., 1], windows * 0.5, rtol=1e-5)  # another column: scaled as given
    assert np.allclose(net_in[..., 2], (z - z[:, -1:]) / p.step_scale, atol=1e-5)  # window-relative steps
    out = keras.Input((3,))
    raw = keras.Input((24, 2))
    served = keras.Model([out, raw], ForecastOutputs(p.matrix, p.offset, p.scale, 0, p.lmbda)([out, raw]))
    got = served.predict([encoded.astype("float32"), x], verbose=0)
    assert np.allclose(got, futures, rtol=1e-4)
    served.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert np.allclose(again.predict([encoded.astype("float32"), x], verbose=0), got)


def test_difference_none_keeps_the_course_scaling():
    y = np.arange(10.0, 160.0, 10.0)
    p = F.plan(y, bounds(15, 0, 6), window=3, horizon=1, season=None, transform="none", difference="none",
               scale="none")
    assert (p.offset, p.scale, p.step_scale) == (0.0, 1.0, None)  # the raw values, as the course trains
    p = F.plan(y, bounds(15, 0, 6), window=3, horizon=1, season=None, transform="none", difference="none")
    assert p.offset == pytest.approx(y[:9].mean()) and p.scale == pytest.approx(y[:9].std())


# -- seasonal period ----------------------------------------------------------------------


def daily(values) -> pd.DataFrame:
    return pd.DataFrame({"v": values}, index=pd.date_range("2001-01-01", periods=len(values), freq="D"))


def test_daily_weather_has_a_yearly_season_and_a_weekly_pattern_a_weekly_one():
    t = np.arange(7 * 365)
    temps = 11 + 5 * np.sin(2 * np.pi * t / 365.25) + np.convolve(RNG.normal(0, 2, len(t)), np.ones(3) / 3, "same")
    assert infer_season(daily(temps), "auto", values=temps)[0] == 365
    visits = 100 + 30 * (t % 7 >= 5) + 0.02 * t + RNG.normal(0, 5, len(t))
    season, why = infer_season(daily(visits), "auto", values=visits)
    assert season == 7 and "7, 365" in why
    short = temps[:500]  # fewer than two years: only the weekly candidate is testable, and it does not peak
    assert infer_season(daily(short), "auto", values=short)[0] is None
    assert infer_season(daily(temps), 7, values=temps) == (7, "data.season=7")
    assert infer_season(daily(temps), "null", values=temps)[0] is None
    assert infer_season(daily(temps), "auto", known=50, values=temps) == (50, "the generator's period")
    undated = pd.DataFrame({"v": temps})
    assert infer_season(undated, "auto", values=temps)[0] is None


def test_monthly_season_found_only_when_the_data_has_one():
    y = airline_like()
    assert seasonal_peak(y, (12,)) == 12
    cycle = 80 + 60 * np.sin(2 * np.pi * np.arange(1000) / 132) + RNG.normal(0, 5, 1000)  # an 11-year cycle
    assert seasonal_peak(cycle, (12,)) is None
