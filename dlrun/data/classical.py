"""The classical forecasters the sequence task compares its network with (course Day 2): exponential
smoothing (ETS) and (seasonal) ARIMA, both from statsmodels.

Each is fitted once on the training part of the (Box-Cox transformed) target, orders chosen by
AICc over a small grid; then, with those parameters fixed, it forecasts `horizon` steps from
every window's origin in the later parts, having seen the observations up to that origin only
(statsmodels' dynamic prediction on the whole series: the model filters the data before the
origin and forecasts past it) -- the same windows the network and the naive baselines answer.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from dataclasses import dataclass

import numpy as np

MAX_SEASON = 24  # seasonal ETS/SARIMA only up to this period: longer seasons make the fits slow
ARIMA_PQ = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))  # (p, q) searched first (p + q <= 2) ...
SEASONAL_PQ = ((0, 1), (1, 0), (1, 1), (0, 0))  # ... with seasonal (0, 1), then (P, Q) for the best (p, q)


class _NoFit(Exception):
    """No candidate model could be fitted."""


@dataclass
class Classical:
    """One fitted classical forecaster: its name, the chosen specification and the forecasts."""

    name: str
    spec: str
    forecasts: np.ndarray  # (origins, horizon), transformed units
    kwargs: dict  # the statsmodels model's arguments (ETSModel / SARIMAX), for anyone to refit it


@contextlib.contextmanager
def _quiet():
    """statsmodels warns about convergence on small grids (the AICc decides anyway); one BLAS
    thread, since the state-space matrices are tiny and threads only contend (10x slower on 2
    busy cores)."""
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), np.errstate(all="ignore"), threadpool_limits(1):
        warnings.simplefilter("ignore")
        yield


def _predict(results, origins: np.ndarray, horizon: int) -> np.ndarray:
    """`horizon` values from each origin (its first forecast row), using the data before it."""
    origins = np.asarray(origins, dtype=int)
    if horizon == 1 and len(origins):  # one-step forecasts of every row at once
        lo = int(origins.min())
        one = np.asarray(results.predict(start=lo, end=int(origins.max())))
        return one[origins - lo][:, None]
    out = np.full((len(origins), horizon), np.nan)
    for i, o in enumerate(origins):
        out[i] = np.asarray(results.predict(start=int(o), end=int(o) + horizon - 1, dynamic=True))
    return out


# task.difference -> (d, D): ARIMA differences the way the network's base does
ORDERS = {"none": (0, 0), "first": (1, 0), "seasonal": (0, 1), "both": (1, 1)}


def fit(kind: str, z: np.ndarray, n_fit: int, origins: np.ndarray, horizon: int, season: int | None,
        difference: str) -> Classical | None:
    """`ets` or `arima` fitted on z[:n_fit], forecasting from `origins`; None when no candidate
    model could be fitted (too few points)."""
    try:
        if kind == "ets":
            return ets(z, n_fit, origins, horizon, season)
        return arima(z, n_fit, origins, horizon, season, *ORDERS[difference])
    except _NoFit:
        return None


def seasonal_period(season: int | None, n_fit: int) -> int | None:
    """The season the classical models use: None above MAX_SEASON or with < 3 seasons of data."""
    return int(season) if season and 2 <= season <= MAX_SEASON and n_fit >= 3 * season else None


def ets(z: np.ndarray, n_fit: int, origins: np.ndarray, horizon: int, season: int | None) -> Classical:
    """Additive-error ETS (on the transformed target) with the lowest AICc among no / additive /
    damped trend x no / additive season."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    z = np.asarray(z, dtype=float)
    m = seasonal_period(season, n_fit)
    specs = [dict(trend=t, damped_trend=d, seasonal=s, seasonal_periods=m if s else None)
             for (t, d), s in itertools.product([(None, False), ("add", False), ("add", True)],
                                                [None, "add"] if m else [None])]
    best = None
    with _quiet():
        for spec in specs:
            try:
                res = ETSModel(z[:n_fit], error="add", **spec).fit(disp=False)
            except (ValueError, np.linalg.LinAlgError, IndexError):
                continue
            if np.isfinite(res.aicc) and (best is None or res.aicc < best[1].aicc):
                best = (spec, res)
        if best is None:
            raise _NoFit
        spec, res = best
        full = ETSModel(z, error="add", **spec).smooth(res.params)
        forecasts = _predict(full, origins, horizon)
    return Classical("ets", _ets_name(spec), forecasts, {"error": "add", **spec})


def _ets_name(spec: dict) -> str:
    trend = "N" if not spec["trend"] else "Ad" if spec["damped_trend"] else "A"
    season = f"A[{spec['seasonal_periods']}]" if spec["seasonal"] else "N"
    return f"ETS(A,{trend},{season})"


def arima(z: np.ndarray, n_fit: int, origins: np.ndarray, horizon: int, season: int | None,
          d: int, seasonal_d: int) -> Classical:
    """(S)ARIMA(p,d,q)(P,D,Q)s on the transformed target, by the lowest AICc in two cheap stages
    (a small stepwise search, as auto.arima's, in a few fits): d and D come from the task's chosen
    differencing; (p, q) among ARIMA_PQ with the seasonal part (0, D, 1), then (P, Q) among
    SEASONAL_PQ for that (p, q). A constant only when nothing is differenced."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    z = np.asarray(z, dtype=float)
    m = seasonal_period(season, n_fit)
    if seasonal_d and not m:  # no seasonal model for this period: difference once instead
        d, seasonal_d = max(d, 1), 0
    trend = "c" if d + seasonal_d == 0 else "n"
    fitted = {}

    def aicc(p, q, sp, sq):
        key = (p, q, sp, sq)
        if key not in fitted:
            try:
                fitted[key] = SARIMAX(z[:n_fit], order=(p, d, q), seasonal_order=(sp, seasonal_d, sq, m) if m
                                      else (0, 0, 0, 0), trend=trend).fit(disp=False)
            except (ValueError, np.linalg.LinAlgError, IndexError):
                fitted[key] = None
        r = fitted[key]
        return r.aicc if r is not None and np.isfinite(r.aicc) else np.inf

    with _quiet():
        first = SEASONAL_PQ[0] if m else (0, 0)
        p, q = min(ARIMA_PQ, key=lambda pq: aicc(*pq, *first))
        sp, sq = min(SEASONAL_PQ, key=lambda s: aicc(p, q, *s)) if m else (0, 0)
        res = fitted[(p, q, sp, sq)]
        if res is None or not np.isfinite(res.aicc):
            raise _NoFit
        forecasts = _predict(res.apply(z), origins, horizon)
    name = f"ARIMA({p},{d},{q})" + (f"({sp},{seasonal_d},{sq})[{m}]" if m else "")
    return Classical("arima", name, forecasts, {"order": (p, d, q), "trend": trend,
                                                "seasonal_order": (sp, seasonal_d, sq, m) if m else (0, 0, 0, 0)})
