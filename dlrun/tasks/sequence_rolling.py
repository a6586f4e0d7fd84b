"""task.evaluation=rolling: rolling-origin (walk-forward) evaluation of the sequence task.

One test part at the end of a series is one origin, and a short series makes its score a matter
of luck. Forecasters re-evaluate at several origins instead (Tashman 2000; Hyndman's
"evaluation on a rolling forecasting origin"): the last `task.rolling.origins` blocks of the
test part's length each serve as a test part once, and for each block everything is refitted
on the steps before it only -- the target representation, the scaling, a fresh network (same
trainer settings, early stopping and best weights) and the baselines, ETS and ARIMA included.
The runner's own run is the last origin; SequenceTask.rolling_origins trains the earlier ones,
on one device; this module says where the origins fall and summarises them.
"""

from __future__ import annotations

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


def summarize(per_origin: list, times, test_len: int, last: dict, label: str) -> Report:
    """The comparison at every origin: a `rolling_origins` table (one row per origin and
    forecaster) and `rolling/<forecaster>/mae` (and rmse) means over the origins. `per_origin`:
    [(series end, {forecaster: metrics})], the last origin (the runner's run, `last`) first."""
    report = Report()
    rows = []
    for end, scores in reversed(per_origin):
        start = end - test_len
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
