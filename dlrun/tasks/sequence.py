"""Sequence task: forecast the next `horizon` values of a series from `window` past steps.

Course Day 2 (sequences, time series, encoder-decoder). Data comes from a `sequence` source
in dlrun/data/series.py (split chronologically, scaled on the training part, windowed); the
model is any `sequence` builder (RNNs, 1-D CNN, seq2seq, MLP). The served model takes windows
in the series' own units (scaling inside) and returns the forecast in them. The report gives
MAE, RMSE and MAPE on the test part next to the naive, seasonal naive and moving-average
baselines on the same windows, a forecast plot, and (next_number preset) predictions for
given input windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Task

BASELINES = ("naive", "seasonal_naive", "moving_average")


@dataclass
class SeriesInfo(DataInfo):
    """DataInfo plus the windowing and the scaling of inputs and target."""

    window: int = 1
    horizon: int = 1
    stride: int = 1
    inputs: list[str] = field(default_factory=list)  # input columns, in order
    target_index: int | None = None  # position of the target among the inputs (residual models)
    input_affine: tuple = ((1.0,), (0.0,))  # scaled = raw * a + b per input column
    target_affine: tuple = (1.0, 0.0)
    bounds: dict = field(default_factory=dict)  # split -> (start row, end row)
    season: int | None = None  # seasonal period for the seasonal naive baseline (None: off)


@TASKS.register("sequence", "Time series forecasting: past window -> next values (RNN, CNN, seq2seq)",
                aliases=("rnn",))
class SequenceTask(Task):
    name = "sequence"

    def data(self, cfg, batch_size: int) -> Data:
        """Load the series, split/scale/window it, and batch the windows (train shuffled within itself)."""
        import pandas as pd

        from dlrun.data.pipeline import fast_subset, from_arrays
        from dlrun.data.preprocess import affine
        from dlrun.data.series import infer_season, prepare

        series = DATA.for_task(cfg.data.name, "sequence").obj(cfg.data)
        parts, meta = prepare(series, cfg.data)
        if cfg.trainer.fast:
            for w in parts.values():
                keep = fast_subset(np.arange(len(w.x)), cfg.trainer.fast_examples, keep_order=True)
                for key in ("x", "y", "y_raw", "history", "time", "index"):
                    setattr(w, key, getattr(w, key)[keep])
        for name in ("train", "test"):
            if not len(parts[name].x):
                raise DlrunError(
                    f"the {name} part has no complete window (window {meta['window']} + horizon {meta['horizon']})",
                    "use a longer series or change data.split / data.window / data.horizon",
                )
        seed = int(cfg.trainer.seed)
        a, b = meta["input_affine"]
        inputs, target = meta["inputs"], meta["target"]
        name = series.name or str(cfg.data.name)
        info = SeriesInfo(
            name=name, input_shape=(meta["window"], len(inputs)), target="regression", output_dim=meta["horizon"],
            feature_names=inputs, target_column=target, source=series.source,
            sizes={k: len(w.x) for k, w in parts.items()}, window=meta["window"], horizon=meta["horizon"],
            stride=meta["stride"], inputs=inputs, target_index=inputs.index(target) if target in inputs else None,
            input_affine=(tuple(map(float, a)), tuple(map(float, b))), target_affine=meta["target_affine"],
            bounds=meta["bounds"], season=infer_season(series.frame, cfg.data.get("season", "auto"), series.season),
        )
        arrays = {"series_time": np.asarray(series.frame.index), "series_values": meta["target_values"]}
        for split, w in parts.items():
            arrays.update({f"x_{split}": w.x, f"y_{split}": w.y, f"history_{split}": w.history,
                           f"time_{split}": w.time, f"index_{split}": w.index})
        test = parts["test"]
        raw_test = (test.x - np.asarray(b)) / np.asarray(a)  # the windows in the series' own units
        examples = {"test": Examples(raw_test.astype("float32"), test.y_raw, pd.DataFrame({"time": test.time}),
                                     name, series.source)}
        records = []
        frame = series.frame.reset_index()
        for split, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
            lo, hi = meta["bounds"][split]
            if hi > lo:
                records.append(DatasetRecord(name, series.source, context, frame.iloc[lo:hi], target))
        val = parts["val"]
        return Data(
            info,
            train=from_arrays(parts["train"].x, parts["train"].y, batch_size,
                              shuffle=bool(cfg.data.get("shuffle", True)), seed=seed),
            val=from_arrays(val.x, val.y, batch_size) if len(val.x) else None,
            test=from_arrays(test.x, test.y, batch_size),
            arrays=arrays, examples=examples, records=records,
            preprocess=affine(info.input_shape, a, b),
        )

    def objective(self, cfg, info: DataInfo) -> Objective:
        return Objective("mae", maximize=False)

    def serving(self, cfg, model, data: Data) -> Served:
        """Windows in the series' units -> {forecast: horizon values in the target's units}."""
        import keras

        info, pre = data.info, data.preprocess
        a, b = info.target_affine
        forecast = keras.layers.Rescaling(1.0 / a, offset=-b / a, name="target_units")(model(pre.output))
        served = keras.Model(pre.input, {"forecast": forecast}, name=f"served_{model.name}")
        steps = [f"t+{k + 1}" for k in range(info.horizon)]
        meta = {"window": info.window, "horizon": info.horizon, "inputs": list(info.inputs),
                "target": info.target_column}
        return Served(served, example=data.examples["test"].inputs[:3], output_columns={"forecast": steps}, meta=meta)

    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """A series CSV with the training file's options: every window of `window` rows, each
        with the following `horizon` target values when the file has them (NaN past its end)."""
        import pandas as pd
        from omegaconf import OmegaConf

        from dlrun.data.series import csv_series

        if not source:
            raise DlrunError("no input file", "input=<series.csv>")
        data_cfg = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
        if data_cfg.get("name") != "csv_series":
            data_cfg = OmegaConf.merge(OmegaConf.create({"sep": "auto", "header": True, "time_column": None,
                                                         "missing": "error"}), data_cfg)
        meta = served.meta if served is not None else {}
        inputs = list(meta.get("inputs") or [])
        window, horizon = int(meta.get("window", cfg.data.window)), int(meta.get("horizon", 1))
        target = str(meta.get("target") or cfg.data.get("target", "value"))
        data_cfg.path = source
        data_cfg.features = inputs or None
        data_cfg.target = target
        try:
            series, has_target = csv_series(data_cfg), True
        except DlrunError as e:  # a file of inputs only: no answers to score, forecasts only
            if f"no column '{target}'" not in e.message or not inputs or target in inputs:
                raise
            data_cfg.target = inputs[0]
            series, has_target = csv_series(data_cfg), False
        frame = series.frame
        x = frame[inputs].to_numpy(dtype="float32") if inputs else frame.to_numpy(dtype="float32")
        n = len(x) - window + 1
        if n < 1:
            raise DlrunError(f"{source}: {len(x)} rows, fewer than the window of {window}")
        windows = np.lib.stride_tricks.sliding_window_view(x, window, axis=0).transpose(0, 2, 1)[:n]
        truth = np.full((n, horizon), np.nan)
        if has_target:
            y = frame[target].to_numpy(dtype=float)
            for k in range(horizon):
                ok = np.arange(n) + window + k < len(y)
                truth[ok, k] = y[np.arange(n)[ok] + window + k]
        times = np.asarray(frame.index)
        rows = pd.DataFrame({"last_input": times[window - 1:window - 1 + n]})
        return Examples(np.ascontiguousarray(windows), truth if has_target else None, rows,
                        series.name, series.source)

    def score(self, cfg, served: Served, examples: Examples) -> Report:
        from dlrun import metrics as M
        from dlrun.serving import predict_frame

        if examples.targets is None:
            raise DlrunError(f"'{examples.name}' has no target column to score against", "use dlrun predict")
        truth = np.asarray(examples.targets, dtype=float)
        complete = np.isfinite(truth).all(axis=1)
        if not complete.any():
            raise DlrunError(f"'{examples.name}': no window has its next values in the file to score against")
        answers = predict_frame(served, examples)
        pred = answers[[c for c in answers.columns if c.startswith("forecast")]].to_numpy(dtype=float)
        return Report(metrics=M.regression(truth[complete], pred[complete]), primary="mae")

    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        """Test metrics in original units for the model and the baselines, plots, predictions."""
        from dlrun import metrics as M
        from dlrun.data.series import moving_average_forecast, naive_forecast, seasonal_naive_forecast
        from dlrun.plots import series as plots
        from dlrun.serving import predict_frame

        info, arrays, examples = data.info, data.arrays, data.examples["test"]
        horizon = int(info.horizon)
        truth = np.asarray(examples.targets, dtype=float)
        answers = predict_frame(served, examples)
        label = str(cfg.model.name)
        forecasts = {label: answers[[f"forecast_t+{k + 1}" for k in range(horizon)]].to_numpy(dtype=float)}
        history = arrays["history_test"]
        k = int(cfg.task.moving_average_window)
        skipped = []
        for name in cfg.task.get("baselines") or []:
            if name == "naive":
                forecasts["naive"] = naive_forecast(history, horizon)
            elif name == "moving_average":
                forecasts["moving_average"] = moving_average_forecast(history, horizon, k)
            elif name == "seasonal_naive":
                if info.season is None:
                    skipped.append("seasonal_naive (no season: set data.season or a time column)")
                    continue
                forecasts["seasonal_naive"] = seasonal_naive_forecast(
                    arrays["series_values"], arrays["index_test"], horizon, info.season)
            else:
                raise DlrunError(f"task.baselines: unknown baseline '{name}'", f"valid: {', '.join(BASELINES)}")

        report = Report(primary="test/mae")
        rows = []
        for name, values in forecasts.items():
            ok = np.isfinite(values).all(axis=1)
            if not ok.any():
                skipped.append(f"{name} (no test window has a full season of history)")
                continue
            scores = M.regression(truth[ok], values[ok])
            report.metrics.update(M.prefixed("test" if name == label else f"baseline/{name}", scores))
            shown = _shown(name, k, info.season)
            rows.append({"forecaster": f"{label} (model)" if name == label else shown, **scores})
        report.tables["comparison"] = rows
        if skipped:
            report.tables["baselines_skipped"] = [{"baseline": s} for s in skipped]
        if horizon > 1:
            report.tables["per_step_mae"] = [
                {"step": s + 1, **{n: float(np.nanmean(abs(truth[:, s] - v[:, s]))) for n, v in forecasts.items()}}
                for s in range(horizon)
            ]
        shown = {_shown(n, k, info.season): v for n, v in forecasts.items()}
        report.figures["forecast.png"] = plots.forecast(arrays["time_test"], truth, shown)
        report.figures["series.png"] = plots.splits(arrays["series_time"], arrays["series_values"], info.bounds,
                                                    info.target_column)
        if cfg.task.get("queries"):
            report.merge(predict_queries(cfg, served, info))
        return report


def _shown(name: str, k: int, season) -> str:
    return {"moving_average": f"moving_average({k})", "seasonal_naive": f"seasonal_naive({season})"}.get(name, name)


def predict_queries(cfg, served: Served, info) -> Report:
    """Predictions for the input windows in task.queries (original units), beside the
    reference values in task.query_reference (the course's numbers), as a table and metrics."""
    from dlrun.serving import predict_frame

    window, n_in = info.input_shape
    queries = [np.asarray(q, dtype=float) for q in cfg.task.queries]
    refs = list(cfg.task.get("query_reference") or [])
    if refs and len(refs) != len(queries):
        raise DlrunError(f"task.query_reference has {len(refs)} values for {len(queries)} queries",
                         "give one reference per query, or none")
    for q in queries:
        if q.size != window * n_in:
            raise DlrunError(f"task.queries: {q.tolist()} does not fit a window of {window} steps x {n_in} inputs",
                             "give one value per past step (one row of inputs per step when multivariate)")
    x = np.stack([q.reshape(window, n_in) for q in queries]).astype("float32")
    pred = predict_frame(served, x).to_numpy(dtype=float)
    report = Report()
    rows = []
    for i, q in enumerate(queries):
        text = "_".join(f"{v:g}" for v in q.ravel())
        value = float(pred[i, 0]) if info.horizon == 1 else [float(v) for v in pred[i]]
        row = {"input": str([float(v) if v % 1 else int(v) for v in q.ravel()]), "prediction": value}
        report.metrics[f"predict/{text}"] = float(pred[i, 0])
        if refs:
            row["reference"] = float(refs[i])
            row["difference"] = float(pred[i, 0]) - float(refs[i])
        rows.append(row)
    report.tables["predictions"] = rows
    return report
