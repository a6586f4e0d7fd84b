"""The ETS and ARIMA baselines are statsmodels' own forecasts: the model the library's AICc
prefers, forecasting from each origin with the data before it only (issue 19)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from dlrun.data import classical as C

N, N_FIT = 96, 72
ORIGINS = np.array([72, 81, 93])  # the first forecast row of each window; 93 + 3 = N


@pytest.fixture(scope="module")
def z():
    t = np.arange(N)
    rng = np.random.default_rng(3)
    return np.log((100 + 2 * t) * (1 + 0.15 * np.sin(2 * np.pi * t / 12))) + rng.normal(0, 0.02, N)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_ets_is_the_lowest_aicc_model_and_forecasts_as_statsmodels_does(z):
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    got = C.ets(z, N_FIT, ORIGINS, 3, 12)
    fits = {}
    for (trend, damped), seasonal in itertools.product([(None, False), ("add", False), ("add", True)], [None, "add"]):
        kw = dict(error="add", trend=trend, damped_trend=damped, seasonal=seasonal,
                  seasonal_periods=12 if seasonal else None)
        fits[(trend, damped, seasonal)] = (kw, ETSModel(z[:N_FIT], **kw).fit(disp=False))
    kw, best = min(fits.values(), key=lambda f: f[1].aicc)
    assert got.kwargs == kw
    for row, origin in zip(got.forecasts, ORIGINS, strict=True):
        own = ETSModel(z[:origin], **kw).smooth(best.params).forecast(3)  # the data before the origin only
        assert np.allclose(row, own)
    one = C.ets(z, N_FIT, np.arange(N_FIT, N), 1, 12).forecasts[:, 0]  # one-step path: all origins at once
    assert np.allclose(one[[0, 9, 21]], [ETSModel(z[:o], **kw).smooth(best.params).forecast(1)[0]
                                         for o in (72, 81, 93)])


def test_arima_forecasts_as_statsmodels_does_from_each_origin(z):
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    got = C.arima(z, N_FIT, ORIGINS, 3, 12, d=1, seasonal_d=1)
    seasonal = got.kwargs["seasonal_order"]
    assert got.kwargs["order"][1] == 1 and (seasonal[1], seasonal[3]) == (1, 12)  # d and D as asked
    res = SARIMAX(z[:N_FIT], **got.kwargs).fit(disp=False)
    for row, origin in zip(got.forecasts, ORIGINS, strict=True):
        assert np.allclose(row, res.apply(z[:origin]).forecast(3), atol=1e-8)
    assert got.spec == f"ARIMA{got.kwargs['order']}{seasonal[:3]}[12]".replace(" ", "")


def test_no_seasonal_model_for_long_periods_and_none_when_nothing_fits(z):
    assert C.seasonal_period(365, 3000) is None and C.seasonal_period(12, 30) is None
    assert C.seasonal_period(12, 72) == 12
    got = C.arima(z, N_FIT, ORIGINS, 1, 365, d=0, seasonal_d=1)  # season too long: first differences instead
    assert got.kwargs["order"][1] == 1 and got.kwargs["seasonal_order"] == (0, 0, 0, 0)
    assert C.fit("ets", z[:2], 2, np.array([1]), 1, None, "none") is None
