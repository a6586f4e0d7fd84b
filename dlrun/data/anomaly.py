"""Embedded data for anomaly detection: normal rows on a low-dimensional manifold plus a
fraction of off-manifold anomalies. The `label` column (0 normal, 1 anomaly) is used only to
pick the outlier threshold on validation data and to score the test split; training sees
normal rows only (task=autoencoder task.mode=outlier).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlrun.data.series import Series
from dlrun.data.tabular import Table
from dlrun.errors import DlrunError
from dlrun.registry import DATA


def manifold_frame(n: int, dims: int = 10, latent: int = 2, fraction: float = 0.05, noise: float = 0.05,
                   seed: int = 0, shift: float = 0.25):
    """(DataFrame x0..x{dims-1} + label, labels): normal rows x = tanh(tanh(z A) B) + noise with
    z ~ N(0, I_latent), a curved manifold (a random two-layer net, so a linear PCA cannot hold it
    in `latent` components); anomalies are manifold points pushed off it by Gaussian noise of sd `shift` per column
    (5x the normal noise by default): inside each column's range, off the manifold jointly."""
    import pandas as pd

    if not 0 <= fraction < 1:
        raise DlrunError(f"data.anomaly_fraction must be in [0, 1), got {fraction}")
    if latent < 1 or dims <= latent:
        raise DlrunError(f"data.dims ({dims}) must exceed data.latent ({latent}) >= 1")
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, (latent, 16)), rng.normal(0, 1, (16, dims))
    n_bad = int(round(n * fraction))
    z = rng.normal(0, 1, (n, latent))
    x = np.tanh(np.tanh(1.5 * z @ a) @ b / 2.0) + rng.normal(0, noise, (n, dims))
    x[n - n_bad:] += rng.normal(0, shift, (n_bad, dims))
    y = np.concatenate([np.zeros(n - n_bad, "int64"), np.ones(n_bad, "int64")])
    order = rng.permutation(n)
    frame = pd.DataFrame(x[order].round(5), columns=[f"x{i}" for i in range(dims)])
    frame["label"] = y[order]
    return frame, y[order]


@DATA.register("anomalies", "Generated rows on a 2-D manifold in 10-D plus off-manifold anomalies (embedded)",
               tags=("tabular",))
def anomalies(cfg) -> Table:
    n, dims, latent = int(cfg.n_samples), int(cfg.dims), int(cfg.latent)
    frac, noise, seed = float(cfg.anomaly_fraction), float(cfg.noise), int(cfg.seed)
    shift = float(cfg.anomaly_shift)
    frame, _ = manifold_frame(n, dims, latent, frac, noise, seed, shift)
    src = f"dlrun:anomalies?n={n}&dims={dims}&latent={latent}&fraction={frac}&shift={shift}&noise={noise}&seed={seed}"
    return Table(frame, "label", "classification", src, class_names=["normal", "anomaly"], name="anomalies")


@dataclass
class LabelledSeries(Series):
    """A Series plus a 0/1 anomaly label per step (for evaluation only)."""

    labels: np.ndarray | None = None


INJECTIONS = ("spike", "level_shift", "flatline")


def series_with_anomalies(length: int = 3000, period: int = 50, amplitude: float = 3.0, noise: float = 0.3,
                          events: int = 30, kinds=INJECTIONS, seed: int = 0):
    """(values, labels): a seasonal series (sine + Gaussian noise) with `events` injected
    anomalies at random places: spikes (one step moved by +-1.3..2 amplitudes),
    level shifts (10-30 steps moved by +-1..2 amplitudes) and flat-lines (15-30 steps held at
    one value). labels[t] = 1 inside an injected event."""
    kinds = [str(k) for k in kinds]
    bad = [k for k in kinds if k not in INJECTIONS]
    if bad or not kinds:
        raise DlrunError(f"data.kinds: unknown '{bad[0] if bad else ''}'", f"valid: {', '.join(INJECTIONS)}")
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    values = amplitude * np.sin(2 * np.pi * t / period) + rng.normal(0, noise, length)
    labels = np.zeros(length, "int64")
    for _ in range(int(events)):
        kind = kinds[rng.integers(len(kinds))]
        start = int(rng.integers(period, length - 40))
        if kind == "spike":
            values[start] += rng.choice([-1, 1]) * rng.uniform(1.3, 2.0) * amplitude
            labels[start] = 1
        elif kind == "level_shift":
            n = int(rng.integers(10, 31))
            values[start:start + n] += rng.choice([-1, 1]) * rng.uniform(0.7, 1.2) * amplitude
            labels[start:start + n] = 1
        else:
            n = int(rng.integers(15, 31))
            values[start:start + n] = values[start]
            labels[start:start + n] = 1
    return values.astype("float32"), labels


@DATA.register("series_anomalies", "Seasonal series with injected spikes, level shifts and flat-lines (embedded)",
               tags=("sequence",))
def series_anomalies(cfg) -> LabelledSeries:
    import pandas as pd

    kw = dict(length=int(cfg.length), period=int(cfg.period), amplitude=float(cfg.amplitude), noise=float(cfg.noise),
              events=int(cfg.events), kinds=list(cfg.get("kinds", INJECTIONS)), seed=int(cfg.seed))
    values, labels = series_with_anomalies(**kw)
    src = "dlrun:series_anomalies?" + "&".join(f"{k}={v if k != 'kinds' else '+'.join(v)}" for k, v in kw.items())
    return LabelledSeries(pd.DataFrame({"value": values}), "value", src, "series_anomalies", kw["period"],
                          labels=labels)
