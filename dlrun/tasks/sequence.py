"""Sequence task: forecast the next `horizon` values of a series from `window` past steps.

Course Day 2 (sequences, time series, encoder-decoder). Data comes from a `sequence` source
in dlrun/data/series.py (split chronologically, scaled on the training part, windowed). The
target representation -- a Box-Cox/log transform and the simple forecast the network corrects
(last value, value one season back, ...) -- is chosen on the training and validation parts
(dlrun/data/forecasting.py). The model is any `sequence` builder (RNNs, 1-D CNN, seq2seq, MLP).
The served model takes windows in the series' own units (all of the above inside) and returns
the forecast in them. The report gives MAE, RMSE and MAPE on the test part next to the naive,
seasonal naive, moving-average, ETS and ARIMA baselines on the same windows (and the same
comparison on the validation windows, with a warning when the network loses there), a
forecast plot, and (next_number preset) predictions for given input windows.
`task.evaluation=rolling` repeats the comparison at earlier origins (SequenceTask.rolling_origins;
where the origins fall and the summary: dlrun/tasks/sequence_rolling.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun import console
from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Task


@dataclass
class SeriesInfo(DataInfo):
    """DataInfo plus the windowing, the input scaling and the target representation."""

    window: int = 1
    horizon: int = 1
    stride: int = 1
    inputs: list[str] = field(default_factory=list)  # input columns, in order
    target_index: int | None = None  # position of the target among the inputs (residual models)
    input_affine: tuple = ((1.0,), (0.0,))  # scaled = raw * a + b per input column
    plan: Any = None  # dlrun.data.forecasting.TargetPlan: transform, difference, target scaling
    bounds: dict = field(default_factory=dict)  # split -> (start row, end row)
    season: int | None = None  # seasonal period (seasonal naive, differencing, ETS/ARIMA; None: off)
    season_why: str = ""


@TASKS.register("sequence", "Time series forecasting: past window -> next values (RNN, CNN, seq2seq)",
                aliases=("rnn",))
class SequenceTask(Task):
    name = "sequence"

    def data(self, cfg, batch_size: int) -> Data:
        """Load the series, then split, transform, window and batch it (see `series_data`)."""
        series = DATA.build(cfg.data, "sequence")
        return series_data(cfg, series, batch_size)

    def build_model(self, cfg, info: DataInfo):
        """The network; when the task already forecasts a change (task.difference) or transforms
        the target, the model's own `residual` (last input value added to the output) would be
        wrong, so it is off."""
        from omegaconf import OmegaConf

        from dlrun.models import build_model
        from dlrun.training.compile import compile_model

        model_cfg, plan = cfg.model, info.plan
        if plan is not None and (plan.difference != "none" or plan.lmbda is not None):
            if str(model_cfg.get("residual", False)).lower() == "true":
                raise DlrunError(f"model.residual=true does not combine with task.difference={plan.difference}, "
                                 f"task.transform={plan.transform}: the task already forecasts a change, or the "
                                 "target is transformed while the inputs are not",
                                 "keep one: model.residual=auto, or task.difference=none task.transform=none")
            model_cfg = OmegaConf.merge(model_cfg, {"residual": False})
        model = build_model(model_cfg, info, task=self.name)
        compile_model(model, cfg, info)
        return model

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        return Objective("mae", maximize=False)

    def serving(self, cfg, model, data: Data) -> Served:
        """Windows in the series' units -> {forecast: horizon values in the target's units}: the
        fitted input scaling, the network, then the target representation undone (base added,
        Box-Cox inverted) by dlrun/models/_series_layers.py."""
        import keras

        from dlrun.models._series_layers import ForecastOutputs

        info, pre, plan = data.info, data.preprocess, data.info.plan
        forecast = ForecastOutputs(plan.matrix, plan.offset, plan.scale, info.target_index, plan.lmbda,
                                   name="target_units", dtype="float32")([model(pre.output), pre.input])
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
        from dlrun import metrics as scoring
        from dlrun.serving import predict_frame

        if examples.targets is None:
            raise DlrunError(f"'{examples.name}' has no target column to score against", "use dlrun predict")
        truth = np.asarray(examples.targets, dtype=float)
        complete = np.isfinite(truth).all(axis=1)
        if not complete.any():
            raise DlrunError(f"'{examples.name}': no window has its next values in the file to score against")
        answers = predict_frame(served, examples)
        pred = answers[[c for c in answers.columns if c.startswith("forecast")]].to_numpy(dtype=float)
        return Report(metrics=scoring.regression(truth[complete], pred[complete]), primary="mae")

    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        """Test metrics in original units for the model and the baselines, plots, predictions;
        the same comparison on the validation windows, with a warning when the network loses
        there; with task.evaluation=rolling, the whole comparison at earlier origins too."""
        from dlrun.plots import series as plots

        info, arrays = data.info, data.arrays
        label = str(cfg.model.name)
        k = int(cfg.task.moving_average_window)
        scored, skipped, specs = forecast_all(cfg, served, data)
        truth, forecasts = scored["test"]
        report = Report(primary="test/mae")
        rows, metrics = compare(truth, forecasts, skipped)
        report.metrics.update({(f"test/{m}" if n == label else f"baseline/{n}/{m}"): v
                               for n, scores in metrics.items() for m, v in scores.items()})
        report.tables["comparison"] = [{**r, "forecaster": shown(r["forecaster"], label, k, info.season, specs)}
                                       for r in rows]
        if skipped:
            report.tables["baselines_skipped"] = [{"baseline": s} for s in skipped]
        plan = info.plan
        report.tables["target"] = [
            {"choice": "season", "value": str(info.season or "none"), "why": info.season_why},
            {"choice": "transform", "value": plan.transform, "why": plan.why_transform},
            {"choice": "difference", "value": plan.difference, "why": plan.why_difference}]
        if info.horizon > 1:
            report.tables["per_step_mae"] = [
                {"step": s + 1, **{n: float(np.nanmean(abs(truth[:, s] - v[:, s]))) for n, v in forecasts.items()}}
                for s in range(info.horizon)
            ]
        if "val" in scored:
            report.merge(validation_check(cfg, *scored["val"], label, k, info.season, specs))
        if str(cfg.task.evaluation) == "rolling":
            report.merge(self.rolling_origins(cfg, data, metrics, label))
        named = {shown(n, label, k, info.season, specs): v for n, v in forecasts.items()}
        report.figures["forecast.png"] = plots.forecast(arrays["time_test"], truth, named)
        report.figures["series.png"] = plots.splits(arrays["series_time"], arrays["series_values"], info.bounds,
                                                    info.target_column)
        if cfg.task.get("queries"):
            report.merge(predict_queries(cfg, served, info))
        return report

    def rolling_origins(self, cfg, data: Data, last: dict, label: str) -> Report:
        """task.evaluation=rolling: refit everything on the steps before each earlier origin and
        compare there too (dlrun/tasks/sequence_rolling.py: where the origins fall, the summary);
        `last` holds the runner's run (the last origin), {forecaster: metrics}."""
        import tempfile
        from pathlib import Path

        from omegaconf import OmegaConf

        from dlrun.tasks.sequence_rolling import fold_ends, summarize
        from dlrun.training.handle import Handle, keras_fit

        info, series = data.info, data.arrays["series"]  # loaded once, by `data`
        (_, n_train), (v_lo, v_hi), (t_lo, t_hi) = info.bounds["train"], info.bounds["val"], info.bounds["test"]
        ends = fold_ends(len(series.frame), n_train, v_hi - v_lo, t_hi - t_lo, int(cfg.task.rolling.origins),
                         info.window, info.horizon)
        fold_cfg = OmegaConf.merge(cfg, {"data": {"split": {"val_size": v_hi - v_lo, "test_size": t_hi - t_lo}},
                                         "task": {"evaluation": "holdout", "min_train_windows": 0}})  # warned once
        per_origin = [(ends[0], last)]
        objective = self.objective(cfg, info)
        for end in ends[1:]:
            fold = series_data(fold_cfg, type(series)(series.frame.iloc[:end], series.target, series.source,
                                                      series.name, series.season), int(cfg.trainer.batch_size))
            model = self.build_model(fold_cfg, fold.info)
            with tempfile.TemporaryDirectory(prefix="dlrun-rolling-") as tmp:
                run = Handle(cfg.trainer, Path(tmp), objective, has_val=fold.val is not None, is_chief=False)
                keras_fit(fold_cfg, model, fold, run)
                run.close()
                if cfg.trainer.checkpoint.evaluate == "best" and run.best is not None:
                    run.best.restore(model)
            scored, skipped, _ = forecast_all(fold_cfg, self.serving(fold_cfg, model, fold), fold)
            per_origin.append((end, compare(*scored["test"], skipped)[1]))
        return summarize(per_origin, np.asarray(series.frame.index), t_hi - t_lo, last, label)


def series_data(cfg, series, batch_size: int) -> Data:
    """Split the series chronologically, choose the target representation on the training and
    validation parts (dlrun/data/forecasting.py), cut the windows and batch them (training
    windows shuffled within the training part)."""
    import pandas as pd

    from dlrun.data import forecasting
    from dlrun.data.pipeline import fast_subset, from_arrays
    from dlrun.data.preprocess import transform
    from dlrun.data.series import infer_season, prepare

    if str(cfg.task.evaluation) not in EVALUATIONS:
        raise DlrunError(f"task.evaluation: unknown value '{cfg.task.evaluation}'", f"valid: {', '.join(EVALUATIONS)}")
    parts, meta = prepare(series, cfg.data)
    few, least = len(parts["train"].x), int(cfg.task.min_train_windows)
    if 0 < few < least:  # none at all is an error below
        console.warn(f"the training part ({meta['bounds']['train'][1]} steps) holds {few} window(s) of "
                     f"{meta['window']} + {meta['horizon']} steps, fewer than task.min_train_windows={least}: "
                     "little to learn from; use a longer series or a smaller data.window")
    if cfg.trainer.fast:
        for w in parts.values():
            keep = fast_subset(np.arange(len(w.x)), cfg.trainer.fast_examples, keep_order=True)
            for key in ("x", "y", "y_raw", "history", "time", "index", "raw"):
                setattr(w, key, getattr(w, key)[keep])
    for name in ("train", "test"):
        if not len(parts[name].x):
            raise DlrunError(
                f"the {name} part has no complete window (window {meta['window']} + horizon {meta['horizon']})",
                "use a longer series or change data.split / data.window / data.horizon",
            )
    seed = int(cfg.trainer.seed)
    a, b = meta["input_affine"]
    inputs, target, window, horizon = meta["inputs"], meta["target"], meta["window"], meta["horizon"]
    target_index = inputs.index(target) if target in inputs else None
    values, n_train = meta["target_values"], meta["bounds"]["train"][1]
    season, season_why = infer_season(series.frame, cfg.data.season, series.season, values[:n_train])
    difference = str(cfg.task.difference)
    if target_index is None:
        if difference not in ("auto", "none"):
            raise DlrunError(f"task.difference={difference} needs the target '{target}' among the inputs",
                             "add it to data.features, or set task.difference=none")
        difference = "none"
    plan = forecasting.plan(values, meta["bounds"], window, horizon, season, str(cfg.task.transform), difference,
                  str(cfg.data.scale))
    pre = forecasting.inputs_model((window, len(inputs)), a, b, target_index, plan)
    for w in parts.values():
        w.x = transform(pre, w.raw)
        w.y = forecasting.encode(plan, forecasting.boxcox(w.history, plan.lmbda), forecasting.boxcox(w.y_raw, plan.lmbda)).astype("float32")
    name = series.name or str(cfg.data.name)
    info = SeriesInfo(
        name=name, input_shape=tuple(pre.output.shape[1:]), target="regression", output_dim=horizon,
        feature_names=inputs, target_column=target, source=series.source,
        sizes={k: len(w.x) for k, w in parts.items()}, window=window, horizon=horizon,
        stride=meta["stride"], inputs=inputs, target_index=target_index,
        input_affine=(tuple(map(float, a)), tuple(map(float, b))), plan=plan, bounds=meta["bounds"], season=season,
        season_why=season_why,
    )
    arrays = {"series_time": np.asarray(series.frame.index), "series_values": values,
              "series": series}  # the loaded series itself: rolling origins refit on its earlier parts
    for split, w in parts.items():
        arrays.update({f"x_{split}": w.x, f"y_{split}": w.y, f"history_{split}": w.history,
                       f"time_{split}": w.time, f"index_{split}": w.index})
    examples = {split: Examples(parts[split].raw.astype("float32"), parts[split].y_raw,
                                pd.DataFrame({"time": parts[split].time}), name, series.source)
                for split in ("val", "test")}
    records = []
    frame = series.frame.reset_index()
    for split, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
        lo, hi = meta["bounds"][split]
        if hi > lo:
            records.append(DatasetRecord(name, series.source, context, frame.iloc[lo:hi], target))
    val, test = parts["val"], parts["test"]
    return Data(
        info,
        train=from_arrays(parts["train"].x, parts["train"].y, batch_size,
                          shuffle=bool(cfg.data.shuffle), seed=seed),
        val=from_arrays(val.x, val.y, batch_size) if len(val.x) else None,
        test=from_arrays(test.x, test.y, batch_size),
        arrays=arrays, examples=examples, records=records, preprocess=pre,
    )


def forecast_all(cfg, served: Served, data: Data) -> tuple[dict, list[str], dict]:
    """({split: (truth, {forecaster: forecasts})} for val (when it has windows) and test,
    skipped baselines with the reason, {classical baseline: its chosen model}), all in the
    user's units. The classical models are fitted once for both parts."""
    from dlrun.data import classical as classical_models
    from dlrun.data import forecasting
    from dlrun.data.series import moving_average_forecast, naive_forecast, seasonal_naive_forecast
    from dlrun.serving import predict_frame

    info, arrays = data.info, data.arrays
    horizon, label = int(info.horizon), str(cfg.model.name)
    k = int(cfg.task.moving_average_window)
    names = [str(n) for n in cfg.task.get("baselines") or []]
    for name in names:
        if name not in BASELINES:
            raise DlrunError(f"task.baselines: unknown baseline '{name}'", f"valid: {', '.join(BASELINES)}")
    splits = [s for s in ("val", "test") if s in data.examples and len(data.examples[s])]
    skipped = []
    if "seasonal_naive" in names and info.season is None:
        skipped.append(f"seasonal_naive (no season: {info.season_why})")
    classical, specs = {}, {}
    for name in (n for n in names if n in CLASSICAL):
        origins = np.concatenate([arrays[f"index_{s}"] for s in splits])
        fitted = classical_models.fit(name, forecasting.boxcox(arrays["series_values"], info.plan.lmbda), info.bounds["train"][1],
                                      origins, horizon, info.season, info.plan.difference)
        if fitted is None:
            skipped.append(f"{name} (no model could be fitted on {info.bounds['train'][1]} training steps)")
            continue
        values = forecasting.inv_boxcox(fitted.forecasts, info.plan.lmbda)
        cuts = np.cumsum([len(arrays[f"index_{s}"]) for s in splits])[:-1]
        classical[name], specs[name] = dict(zip(splits, np.split(values, cuts), strict=True)), fitted.spec
    scored = {}
    for split in splits:
        examples = data.examples[split]
        answers = predict_frame(served, examples)
        forecasts = {label: answers[[f"forecast_t+{j + 1}" for j in range(horizon)]].to_numpy(dtype=float)}
        history = arrays[f"history_{split}"]
        for name in names:
            if name == "naive":
                forecasts[name] = naive_forecast(history, horizon)
            elif name == "moving_average":
                forecasts[name] = moving_average_forecast(history, horizon, k)
            elif name == "seasonal_naive" and info.season is not None:
                forecasts[name] = seasonal_naive_forecast(arrays["series_values"], arrays[f"index_{split}"],
                                                          horizon, info.season)
            elif name in classical:
                forecasts[name] = classical[name][split]
        scored[split] = (np.asarray(examples.targets, dtype=float), forecasts)
    return scored, skipped, specs


def compare(truth: np.ndarray, forecasts: dict, skipped: list) -> tuple[list[dict], dict]:
    """(table rows, {forecaster: metrics}) in the user's units, each forecaster on the windows it
    answers (a seasonal naive needs a season of history)."""
    from dlrun import metrics as scoring

    rows, scores = [], {}
    for name, values in forecasts.items():
        ok = np.isfinite(values).all(axis=1)
        if not ok.any():
            skipped.append(f"{name} (no window has a full season of history)")
            continue
        scores[name] = scoring.regression(truth[ok], values[ok])
        rows.append({"forecaster": name, **scores[name]})
    return rows, scores


def validation_check(cfg, truth, forecasts: dict, label: str, k: int, season, specs) -> Report:
    """The validation MAE of every forecaster (the windows they all answer) as a table, and the
    warning line when the network, at the evaluated weights, loses to the best baseline there."""
    from dlrun.metrics import losing_to_baseline

    ok = np.all([np.isfinite(v).all(axis=1) for v in forecasts.values()], axis=0)
    report = Report()
    if not ok.any():
        return report
    mae = {n: float(np.mean(np.abs(truth[ok] - v[ok]))) for n, v in forecasts.items()}
    report.tables["validation_mae"] = [{"forecaster": shown(n, label, k, season, specs), "mae": v}
                                       for n, v in mae.items()]
    baselines = {n: v for n, v in mae.items() if n != label}
    best = min(baselines, key=baselines.get) if baselines else None
    hint = SUGGESTIONS.get(best, SUGGESTIONS["naive"]).format(window=2 * int(cfg.data.window))
    line = losing_to_baseline("mae", False, mae[label], baselines, hint)
    if line:
        report.warnings.append(line)
    return report


BASELINES = ("naive", "seasonal_naive", "moving_average", "ets", "arima")
EVALUATIONS = ("holdout", "rolling")


CLASSICAL = ("ets", "arima")  # dlrun/data/classical.py
_LONGER = "a longer window (data.window={window}) or more history; the classical forecast may simply fit a short " \
          "series better"
# what to try when the network loses on validation, by the baseline it loses to
SUGGESTIONS = {
    "ets": _LONGER,
    "arima": _LONGER,
    "naive": "a longer window (data.window={window}), more epochs, or task.difference=first",
    "seasonal_naive": "task.difference=seasonal, or a window of at least one season (data.window={window})",
    "moving_average": "a longer window (data.window={window}), more epochs, or task.difference=first",
}


def shown(name: str, label: str, k: int, season, specs: dict) -> str:
    if name == label:
        return f"{label} (model)"
    if name in specs:
        return f"{name}: {specs[name]}"
    return {"moving_average": f"moving_average({k})", "seasonal_naive": f"seasonal_naive({season})"}.get(name, name)


def predict_queries(cfg, served: Served, info) -> Report:
    """Predictions for the input windows in task.queries (original units), beside the
    reference values in task.query_reference (the course's numbers), as a table and metrics."""
    from dlrun.serving import predict_frame

    window, n_in = info.window, len(info.inputs)
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
