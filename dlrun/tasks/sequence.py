"""Sequence task: forecast the next `horizon` values of a series from `window` past steps.

Course Day 2 (sequences, time series, encoder-decoder). Data comes from a `sequence` source
in dlrun/data/series.py (split chronologically, scaled on the training part, windowed); the
model is any `sequence` builder (RNNs, 1-D CNN, seq2seq, MLP). The report gives MAE, RMSE and
MAPE on the test part in original units next to the naive and moving-average baselines on the
same windows, a forecast plot, and (next_number preset) predictions for given input windows.
"""

from __future__ import annotations

from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Data, DataInfo, Report, Task

BASELINES = ("naive", "moving_average")


@TASKS.register("sequence", "Time series forecasting: past window -> next values (RNN, CNN, seq2seq)",
                aliases=("rnn",))
class SequenceTask(Task):
    name = "sequence"

    def data(self, cfg, batch_size: int) -> Data:
        """Load the series, split/scale/window it, and batch the windows (train shuffled within itself)."""
        from dlrun.data.pipeline import from_arrays
        from dlrun.data.series import prepare

        series = DATA.for_task(cfg.data.name, "sequence").obj(cfg.data)
        parts, meta = prepare(series, cfg.data)
        if cfg.trainer.get("fast", False):
            keep = int(cfg.task.fast_windows)
            for w in parts.values():
                for key in ("x", "y", "y_raw", "history", "time"):
                    setattr(w, key, getattr(w, key)[:keep])
        for name in ("train", "test"):
            if not len(parts[name].x):
                raise DlrunError(
                    f"the {name} part has no complete window (window {meta['window']} + horizon {meta['horizon']})",
                    "use a longer series or change data.split / data.window / data.horizon",
                )
        seed = int(cfg.trainer.seed)
        train, val, test = parts["train"], parts["val"], parts["test"]
        info = DataInfo(
            name=str(cfg.data.name),
            input_shape=(meta["window"], len(meta["inputs"])),
            target="regression",
            output_dim=meta["horizon"],
            feature_names=meta["inputs"],
            source=series.source,
            sizes={k: len(w.x) for k, w in parts.items()},
            extra={
                "target_column": meta["target"],
                "target_index": meta["inputs"].index(meta["target"]) if meta["target"] in meta["inputs"] else None,
                "target_affine": meta["target_affine"],
                "input_affine": meta["input_affine"],
                "window": meta["window"],
                "horizon": meta["horizon"],
                "stride": meta["stride"],
                "bounds": meta["bounds"],
            },
        )
        arrays = {}
        for name, w in parts.items():
            arrays.update({f"x_{name}": w.x, f"y_{name}": w.y, f"y_raw_{name}": w.y_raw,
                           f"history_{name}": w.history, f"time_{name}": w.time})
        return Data(
            train=from_arrays(train.x, train.y, batch_size, shuffle=bool(cfg.data.get("shuffle", True)), seed=seed),
            val=from_arrays(val.x, val.y, batch_size) if len(val.x) else None,
            test=from_arrays(test.x, test.y, batch_size),
            info=info,
            arrays=arrays,
            frame=series.frame.reset_index(),
        )

    def evaluate(self, cfg, model, data: Data) -> Report:
        """Test metrics in original units for the model and the baselines, plots, predictions."""
        from dlrun import metrics as M
        from dlrun.data.series import moving_average_forecast, naive_forecast, unscale
        from dlrun.plots import series as plots

        info, arrays = data.info, data.arrays
        horizon = int(info.output_dim)
        truth = arrays["y_raw_test"]
        pred = unscale(_predict(model, arrays["x_test"], horizon), info.extra["target_affine"])
        label = str(cfg.model.name)
        forecasts = {label: pred}
        history = arrays["history_test"]
        k = int(cfg.task.moving_average_window)
        for name in cfg.task.get("baselines") or []:
            if name == "naive":
                forecasts["naive"] = naive_forecast(history, horizon)
            elif name == "moving_average":
                forecasts["moving_average"] = moving_average_forecast(history, horizon, k)
            else:
                raise DlrunError(f"task.baselines: unknown baseline '{name}'", f"valid: {', '.join(BASELINES)}")

        report = Report(primary="test/mae")
        rows = []
        for name, values in forecasts.items():
            scores = M.regression(truth, values)
            report.metrics.update(M.prefixed("test" if name == label else f"baseline/{name}", scores))
            shown = f"moving_average({k})" if name == "moving_average" else name
            rows.append({"forecaster": f"{label} (model)" if name == label else shown, **scores})
        report.tables["comparison"] = rows
        if horizon > 1:
            report.tables["per_step_mae"] = [
                {"step": s + 1, **{n: float(abs(truth[:, s] - v[:, s]).mean()) for n, v in forecasts.items()}}
                for s in range(horizon)
            ]
        shown = {(f"moving_average({k})" if n == "moving_average" else n): v for n, v in forecasts.items()}
        report.figures["forecast.png"] = plots.forecast(arrays["time_test"], truth, shown)
        if data.frame is not None:
            frame, target = data.frame, info.extra["target_column"]
            report.figures["series.png"] = plots.splits(frame.iloc[:, 0].to_numpy(), frame[target].to_numpy(),
                                                        info.extra["bounds"], target)
        if cfg.task.get("queries"):
            report.merge(predict_queries(cfg, model, info))
        return report


def _predict(model, x, horizon: int):
    return model.predict(x, batch_size=256, verbose=0).reshape(len(x), horizon)


def predict_queries(cfg, model, info) -> Report:
    """Predictions for the input windows in task.queries (original units), beside the
    reference values in task.query_reference (the course's numbers), as a table and metrics."""
    import numpy as np

    from dlrun.data.series import unscale

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
    a, b = info.extra["input_affine"]
    x = np.stack([q.reshape(window, n_in) * np.asarray(a) + np.asarray(b) for q in queries]).astype("float32")
    horizon = int(info.output_dim)
    pred = unscale(_predict(model, x, horizon), info.extra["target_affine"])
    report = Report()
    rows = []
    for i, q in enumerate(queries):
        text = "_".join(f"{v:g}" for v in q.ravel())
        value = float(pred[i, 0]) if horizon == 1 else [float(v) for v in pred[i]]
        row = {"input": str([float(v) if v % 1 else int(v) for v in q.ravel()]), "prediction": value}
        report.metrics[f"predict/{text}"] = float(pred[i, 0])
        if refs:
            row["reference"] = float(refs[i])
            row["difference"] = float(pred[i, 0]) - float(refs[i])
        rows.append(row)
    report.tables["predictions"] = rows
    return report
