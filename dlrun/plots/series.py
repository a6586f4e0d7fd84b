"""Time-series figures: the forecast against the truth, and the series with its splits."""

from __future__ import annotations

import numpy as np

from dlrun.plots import new_figure


def forecast(time, truth, predictions: dict, title: str = "Forecast on the test part", fans: int = 4):
    """Truth vs each forecaster's next-step prediction over the test part.

    truth and each prediction are (n, horizon) arrays in original units, one row per test
    window, `time` the time of each row's first target. With horizon > 1 a second panel shows
    `fans` full multi-step forecasts from evenly spaced origins against the true continuation.
    """
    truth = np.asarray(truth, dtype=float)
    horizon = truth.shape[1] if truth.ndim == 2 else 1
    truth = truth.reshape(len(truth), horizon)
    rows = 2 if horizon > 1 else 1
    fig, axes = new_figure(rows, 1, figsize=(10, 3.6 * rows), squeeze=False)
    ax = axes[0][0]
    ax.plot(time, truth[:, 0], color="black", linewidth=1.6, label="truth")
    for name, pred in predictions.items():
        pred = np.asarray(pred, dtype=float).reshape(len(truth), horizon)
        ax.plot(time, pred[:, 0], linewidth=1.0, alpha=0.85, label=name,
                linestyle="-" if name == next(iter(predictions)) else "--")
    ax.set_title(title if horizon == 1 else f"{title} (first step of {horizon})")
    ax.set_xlabel("time")
    ax.legend(loc="best", fontsize=8)
    if horizon > 1:
        ax = axes[1][0]
        name, pred = next(iter(predictions.items()))
        pred = np.asarray(pred, dtype=float).reshape(len(truth), horizon)
        origins = np.unique(np.linspace(0, max(0, len(truth) - 1), max(1, fans)).astype(int))
        for k, i in enumerate(origins):
            steps = np.arange(i, i + horizon)
            ax.plot(steps, truth[i], color="black", linewidth=1.4, label="truth" if k == 0 else None)
            ax.plot(steps, pred[i], color="tab:blue", marker=".", label=name if k == 0 else None)
        ax.set_title(f"{horizon}-step forecasts from {len(origins)} origins")
        ax.set_xlabel("test window index + step")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def splits(time, values, bounds: dict, name: str = "value"):
    """The whole target series with its chronological train / validation / test parts shaded."""
    fig, ax = new_figure(figsize=(10, 3.2))
    time = np.asarray(time)
    values = np.asarray(values, dtype=float)
    colors = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
    for part, (start, end) in bounds.items():
        if end > start:
            ax.plot(time[start:end], values[start:end], color=colors.get(part), linewidth=1.0,
                    label=f"{part} ({end - start})")
    ax.set_title(f"{name}: chronological split")
    ax.set_xlabel("time")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig
