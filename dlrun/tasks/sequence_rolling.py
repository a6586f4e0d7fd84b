"""task.evaluation=rolling: rolling-origin (walk-forward) evaluation of the sequence task.

One test part at the end of a series is one origin, and a short series makes its score a matter
of luck. Forecasters re-evaluate at several origins instead (Tashman 2000; Hyndman's
"evaluation on a rolling forecasting origin"): the last `task.rolling.origins` blocks of the
test part's length each serve as a test part once, and for each block everything is refitted
on the steps before it only -- the target representation, the scaling, a fresh network (same
trainer settings, early stopping and best weights) and the baselines, ETS and ARIMA included.
The runner's own run is the last origin; the earlier ones are trained here, on one device.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from dlrun.contract import Report
from dlrun.errors import DlrunError


def fold_ends(n: int, n_train: int, n_val: int, n_test: int, origins: int, window: int, horizon: int) -> list[int]:
    """The series length each origin sees (its test block ends there), last origin first:
    n, n - n_test, n - 2 n_test, ... A DlrunError when the earliest keeps too little to train on."""
    if origins < 1:
        raise DlrunError(f"task.rolling.origins must be >= 1, got {origins}")
    ends = [n - i * n_test for i in range(origins)]
    first_train = n_train - (origins - 1) * n_test
    if first_train < window + horizon:
        most = max(1, (n_train - window - horizon) // max(n_test, 1) + 1)
        raise DlrunError(f"task.rolling.origins={origins} leaves the earliest origin {max(first_train, 0)} training "
                         f"steps, fewer than window + horizon = {window + horizon}",
                         f"use at most task.rolling.origins={most}, or smaller data.split sizes")
    return ends


def rolling_origins(task, cfg, data, last: dict, label: str) -> Report:
    """The comparison at every origin: a `rolling_origins` table (one row per origin and
    forecaster) and `rolling/<forecaster>/mae` (and rmse) means over the origins; `last` holds
    the runner's run (the last origin), {forecaster: metrics}."""
    from omegaconf import OmegaConf

    from dlrun.registry import DATA
    from dlrun.tasks.sequence import compare, forecast_all, series_data
    from dlrun.training.handle import Handle, keras_fit

    info = data.info
    series = DATA.for_task(cfg.data.name, "sequence").obj(cfg.data)
    n = len(series.frame)
    (_, n_train), (v_lo, v_hi), (t_lo, t_hi) = info.bounds["train"], info.bounds["val"], info.bounds["test"]
    ends = fold_ends(n, n_train, v_hi - v_lo, t_hi - t_lo, int(cfg.task.rolling.origins), info.window,
                     info.horizon)
    fold_cfg = OmegaConf.merge(cfg, {"data": {"split": {"val_size": v_hi - v_lo, "test_size": t_hi - t_lo}},
                                     "task": {"evaluation": "holdout", "min_train_windows": 0}})  # warned once
    times = np.asarray(series.frame.index)
    per_origin = [(ends[0], last)]
    objective = task.objective(cfg, info)
    for end in ends[1:]:
        fold = series_data(fold_cfg, type(series)(series.frame.iloc[:end], series.target, series.source,
                                                  series.name, series.season), int(cfg.trainer.batch_size))
        model = task.build_model(fold_cfg, fold.info)
        with tempfile.TemporaryDirectory(prefix="dlrun-rolling-") as tmp:
            run = Handle(cfg.trainer, Path(tmp), objective, has_val=fold.val is not None, is_chief=False)
            keras_fit(fold_cfg, model, fold, run)
            run.close()
            if cfg.trainer.checkpoint.evaluate == "best" and run.best is not None:
                run.best.restore(model)
        scored, skipped, _ = forecast_all(fold_cfg, task.serving(fold_cfg, model, fold), fold)
        per_origin.append((end, compare(*scored["test"], skipped)[1]))
    report = Report()
    rows = []
    for end, scores in reversed(per_origin):
        start = end - (t_hi - t_lo)
        for name, m in scores.items():
            rows.append({"test_from": str(times[start]), "test_to": str(times[end - 1]), "forecaster": name,
                         "mae": m["mae"], "rmse": m["rmse"]})
    report.tables["rolling_origins"] = rows
    names = [k for k in last if all(k in s for _, s in per_origin)]
    for name in names:
        prefix = "rolling" if name == label else f"rolling/baseline/{name}"
        for m in ("mae", "rmse"):
            report.metrics[f"{prefix}/{m}"] = float(np.mean([s[name][m] for _, s in per_origin]))
    report.metrics["rolling/origins"] = float(len(per_origin))
    return report
