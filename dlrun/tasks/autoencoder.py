"""Autoencoder task: reconstruct, denoise, or flag outliers by reconstruction error.

Data comes from the existing sources: image sources (dlrun.data.images: digits embedded,
mnist, fashion_mnist, folder) and tabular ones (the DATA entries tagged "tabular", including
the embedded `anomalies` generator). Modes (task.mode):

- reconstruct: input -> input; report MSE (and BCE for images).
- denoise: Gaussian or salt-and-pepper noise on the inputs only (added per batch, so each
  epoch sees fresh noise); report MSE(denoised, clean) next to MSE(noisy, clean).
- outlier: train on normal examples only; score = mean squared reconstruction error per
  example; the threshold maximising task.threshold_metric (accuracy or f1) on the labelled
  validation split is applied unchanged to the test split. The served model returns score and
  flag for raw inputs (threshold inside). Baselines on the same split: IsolationForest and PCA
  reconstruction error (baseline/<name>/*), thresholds chosen the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks._autoencoder_report import (
    choose_threshold,
    grids,
    latent_scatter,
    outlier_baselines,
    outlier_figures,
    outlier_metrics,
    vae_figures,
)
from dlrun.tasks.base import Task

MODES = ("reconstruct", "denoise", "outlier")
NOISES = ("gaussian", "salt_pepper")

DATA.also_serves("autoencoder", ("image", "tabular", "sequence"))


@dataclass
class AEInfo(DataInfo):
    kind: str = "tabular"  # image | tabular | series
    labelled: bool = True  # series: the source labels anomalous steps
    bounded: bool = False  # model inputs lie in [0, 1] (images): sigmoid output, BCE reported
    columns: list[str] | None = None  # tabular: the raw columns the served model takes
    scale: float = 1.0  # images: raw pixel * scale in [0, 1]
    mean: list[float] | None = None  # tabular, all-numeric: model units -> user units
    std: list[float] | None = None


def _labels(split_cfg_or_task, y, kind, class_names):
    """0 normal / 1 anomaly per example: tabular sources have the label as target; image
    sources call the classes outside task.normal_classes anomalies."""
    if kind != "image":  # tables and series carry the 0/1 label
        return np.asarray(y).astype("int64")
    normal = split_cfg_or_task.get("normal_classes")
    if not normal:
        raise DlrunError("task.mode=outlier on images needs task.normal_classes", "e.g. task.normal_classes=[0]")
    names = [str(n) for n in normal]
    bad = [n for n in names if n not in class_names]
    if bad:
        raise DlrunError(f"task.normal_classes: unknown class {bad[0]}", f"classes: {', '.join(class_names)}")
    idx = [class_names.index(n) for n in names]
    return (~np.isin(y, idx)).astype("int64")


@TASKS.register("autoencoder", "Autoencoders: reconstruct, denoise, outlier scores (images, tables)")
class AutoencoderTask(Task):
    name = "autoencoder"

    # -- data -----------------------------------------------------------------------------
    def data(self, cfg, batch_size: int) -> Data:
        t = cfg.task
        mode = str(t.mode)
        if mode not in MODES:
            raise DlrunError(f"task.mode: unknown '{mode}'", f"valid: {', '.join(MODES)}")
        entry = DATA.for_task(cfg.data.name, self.name)
        if "image" in entry.tags:
            arrays, info, examples, records, pre, warn = self._images(cfg)
        elif "sequence" in entry.tags:
            arrays, info, examples, records, pre, warn = self._series(cfg, entry)
        else:
            arrays, info, examples, records, pre, warn = self._table(cfg)
        if mode == "outlier":
            if not info.labelled:
                raise DlrunError(f"task.mode=outlier needs labelled anomalies; '{info.name}' has none",
                                 "data=series_anomalies (series), data=anomalies (tables)")
            for s in ("train", "val", "test"):
                arrays[f"a_{s}"] = _labels(t, arrays[f"y_{s}"], info.kind, info.class_names or [])
            keep = arrays["a_train"] == 0  # train on normal examples only
            arrays["x_train"], arrays["y_train"], arrays["a_train"] = (arrays["x_train"][keep], arrays["y_train"][keep],
                                                                       arrays["a_train"][keep])
            for s in ("val", "test"):
                if len(np.unique(arrays[f"a_{s}"])) < 2:
                    warn.append(f"the {s} split has no {'anomalies' if arrays[f'a_{s}'].max(initial=0) == 0 else 'normal examples'}")
        if cfg.trainer.fast:
            from dlrun.data.pipeline import fast_subset

            n = int(cfg.trainer.fast_examples)
            for s in ("train", "val", "test"):
                i = fast_subset(np.arange(len(arrays[f"x_{s}"])), n, int(cfg.trainer.seed))
                for k in [k for k in arrays if k.endswith(f"_{s}")]:
                    arrays[k] = arrays[k][i]
                if s in examples:
                    examples[s] = _take(examples[s], i)
        info.sizes = {s: len(arrays[f"x_{s}"]) for s in ("train", "val", "test")}
        if info.sizes["train"] < 2:
            raise DlrunError(f"the train split has {info.sizes['train']} example(s): too few")
        train = self._pipeline(cfg, arrays["x_train"], batch_size, training=True)
        val = self._pipeline(cfg, arrays["x_val"], batch_size) if info.sizes["val"] else None
        test = self._pipeline(cfg, arrays["x_test"], batch_size)
        return Data(info, train, val, test, arrays=arrays, examples=examples, records=records, preprocess=pre,
                    warnings=warn)

    def _images(self, cfg):
        from dlrun.data.images import image_size, load_images, split_arrays, to_model_input

        src = load_images(cfg.data)
        if src.arrays is None:
            raise DlrunError(f"data source '{cfg.data.name}' streams tf.data splits; task=autoencoder takes "
                             "in-memory image sources", "data=digits, mnist, fashion_mnist")
        split = split_arrays(src.arrays, cfg.task.split)
        size = image_size(cfg.data.get("image_size"))
        arrays = {}
        for s in ("train", "val", "test"):
            arrays[f"x_{s}"] = to_model_input(split[f"x_{s}"], src.scale, size)
            arrays[f"y_{s}"] = np.asarray(split[f"y_{s}"])
        shape = tuple(arrays["x_train"].shape[1:])
        info = AEInfo(name=str(cfg.data.name), input_shape=shape, target="reconstruction",
                      num_classes=len(src.class_names), class_names=list(src.class_names), source=src.source,
                      kind="image", bounded=True, scale=float(src.scale))
        # the served model takes raw pixels (the source's own range), as the image task's does
        examples = {s: Examples(arrays[f"x_{s}"] / np.float32(src.scale), arrays[f"y_{s}"], None, info.name,
                                src.source) for s in ("train", "val", "test")}
        return arrays, info, examples, [], None, list(src.warnings)

    def _table(self, cfg):
        from dlrun.data import preprocess
        from dlrun.data.pipeline import split_indices

        table = DATA.build(cfg.data, "tabular")
        frame, target = table.frame, table.target
        features = [c for c in frame.columns if c != target]
        y = frame[target].to_numpy()
        idx = dict(zip(("train", "val", "test"), split_indices(len(frame), y, cfg.task.split,
                                                                bool(cfg.task.split.stratify),
                                                                table.test_rows), strict=True))
        pre, names = preprocess.table(frame.iloc[idx["train"]], features, True)
        arrays = {}
        for s, i in idx.items():
            arrays[f"x_{s}"] = preprocess.transform(pre, preprocess.columns_of(frame.iloc[i], features)).astype("float32")
            arrays[f"y_{s}"] = y[i]
        mean = std = None
        if names == features:  # all numeric: the served reconstruction can answer in the columns' units
            v = frame.iloc[idx["train"]][features].to_numpy(dtype="float64")
            mean, std = v.mean(axis=0).tolist(), [float(s) if s > 0 else 1.0 for s in v.std(axis=0)]
        name = table.name or str(cfg.data.name)
        info = AEInfo(name=name, input_shape=(len(names),), target="reconstruction", num_classes=None,
                      class_names=table.class_names, feature_names=names, target_column=target, source=table.source,
                      kind="tabular", columns=features, mean=mean, std=std)
        examples, records = {}, []
        for s, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
            rows = frame.iloc[idx[s]].reset_index(drop=True)
            examples[s] = Examples(rows[features], rows[target].to_numpy(), rows, name, table.source)
            if len(rows):
                records.append(DatasetRecord(name, table.source, context, rows, target))
        return arrays, info, examples, records, pre, list(table.warnings)

    def _series(self, cfg, entry):
        """Windows of a sequence source, split in time order, standardised on the training part;
        a window is anomalous when it holds a labelled step (labelled sources only)."""
        import pandas as pd

        from dlrun.data.preprocess import affine
        from dlrun.data.series import split_sizes

        series = DATA.build(cfg.data, self.name)
        cols = [str(c) for c in (cfg.data.get("features") or series.frame.select_dtypes("number").columns)]
        missing = [c for c in cols if c not in series.frame.columns]
        if missing:
            raise DlrunError(f"data.features: no column '{missing[0]}'", f"columns: {', '.join(series.frame.columns)}")
        values = series.frame[cols].to_numpy("float32")
        steps = getattr(series, "labels", None)
        labelled = steps is not None
        steps = np.zeros(len(values), "int64") if steps is None else np.asarray(steps)
        window, stride = int(cfg.data.window), int(cfg.data.stride)
        split = cfg.data.get("split") or {}
        n_tr, n_va, _ = split_sizes(len(values), split.get("val_size", 0.2), split.get("test_size", 0.2))
        bounds = {"train": (0, n_tr), "val": (n_tr, n_tr + n_va), "test": (n_tr + n_va, len(values))}
        mean, std = values[:n_tr].mean(axis=0), values[:n_tr].std(axis=0)
        std = np.where(std > 0, std, 1.0).astype("float32")
        arrays, examples, records = {}, {}, []
        for s, (a, b) in bounds.items():
            raw, lab, starts = windows(values[a:b], steps[a:b], window, stride)
            if not len(raw) and s != "val":
                raise DlrunError(f"the {s} part has {b - a} steps, fewer than data.window={window}")
            arrays[f"x_{s}"], arrays[f"y_{s}"] = (raw - mean) / std, lab
            rows = pd.DataFrame({"start": starts + a, "anomaly": lab})
            examples[s] = Examples(raw, lab, rows, series.name or str(cfg.data.name), series.source)
        frame = series.frame[cols].assign(anomaly=steps)
        records.append(DatasetRecord(series.name or str(cfg.data.name), series.source, "training", frame, None))
        info = AEInfo(name=series.name or str(cfg.data.name), input_shape=(window, len(cols)), target="reconstruction",
                      class_names=["normal", "anomaly"], feature_names=cols, source=series.source, kind="series",
                      labelled=labelled, columns=cols, mean=mean.tolist(), std=std.tolist())
        pre = affine((window, len(cols)), 1.0 / std, -mean / std)
        return arrays, info, examples, records, pre, []

    def _pipeline(self, cfg, x, batch_size: int, training: bool = False):
        """(noisy or clean input, clean target) batches; noise is drawn per batch."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices(x)
        if training:
            ds = ds.shuffle(len(x), seed=int(cfg.trainer.seed), reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        t = cfg.task
        if str(t.mode) == "denoise":
            noise = str(t.noise.kind)
            if noise not in NOISES:
                raise DlrunError(f"task.noise.kind: unknown '{noise}'", f"valid: {', '.join(NOISES)}")
            level, clip = float(t.noise.level), "image" in DATA.entry(cfg.data.name).tags
            seed = int(cfg.trainer.seed) + (0 if training else 1)
            if not training:  # fixed noise on validation so val_loss is comparable across epochs
                noisy = add_noise(x, noise, level, clip, seed)
                return tf.data.Dataset.from_tensor_slices((noisy, x)).batch(batch_size).prefetch(2)
            return ds.map(lambda b: (_tf_noise(b, noise, level, clip), b)).prefetch(2)
        return ds.map(lambda b: (b, b)).prefetch(2)

    # -- model ----------------------------------------------------------------------------
    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        return Objective("loss", maximize=False)

    def build_model(self, cfg, info: DataInfo):
        from dlrun.models import build_model
        from dlrun.training.compile import make_optimizer

        model = build_model(cfg.model, info, task=self.name)
        model.compile(optimizer=make_optimizer(cfg.trainer, info.steps_per_epoch), loss="mse")
        return model

    # -- serving --------------------------------------------------------------------------
    def serving(self, cfg, model, data: Data) -> Served:
        """outlier: raw input -> {score, anomaly} (threshold inside); otherwise -> {reconstruction, error}."""
        import keras

        info = data.info
        if hasattr(model, "deterministic"):  # VAE: serve decoder(mean), a plain functional model
            model = model.deterministic()
        if info.kind == "image":
            from dlrun.data.preprocess import images

            pre = images(int(info.input_shape[-1]), info.scale, tuple(info.input_shape[:2]))
            inputs, x = pre.input, pre.output
        else:
            pre = data.preprocess
            inputs, x = pre.input, pre.output
        rec = model(x)
        axes = tuple(range(1, len(info.input_shape) + 1))
        err = keras.ops.mean(keras.ops.square(rec - x), axis=axes)
        meta = {"mode": str(cfg.task.mode), "kind": info.kind}
        if info.kind == "series":
            meta.update({"columns": info.columns, "window": int(info.input_shape[0]),
                         "stride": int(cfg.data.stride)})
        if info.kind == "image":
            meta.update({"scale": info.scale, "size": list(info.input_shape[:2]),
                         "channels": int(info.input_shape[-1])})
        if cfg.task.mode == "outlier":
            scores = _errors(model, data.arrays["x_val"])
            threshold, _ = choose_threshold(scores, data.arrays["a_val"], str(cfg.task.threshold_metric))
            meta["threshold"] = threshold
            flag = keras.ops.cast(keras.ops.greater(err, threshold), "int32")
            outputs = {"score": err, "anomaly": flag}
        else:
            out = rec
            if info.kind != "image" and info.mean is not None:
                out = rec * np.asarray(info.std, "float32") + np.asarray(info.mean, "float32")
            outputs = {"reconstruction": out, "error": err}
        from dlrun.data.preprocess import dict_inputs

        with dict_inputs():
            served = keras.Model(inputs, outputs, name=f"served_{model.name}")
        columns = {"reconstruction": list(info.columns)} if info.kind == "tabular" and info.mean is not None else {}
        ex = data.examples["test"].inputs
        example = ex.head(5) if hasattr(ex, "head") else np.asarray(ex[:4], "float32")
        return Served(served, example=example, output_columns=columns, meta=meta)

    # -- report ---------------------------------------------------------------------------
    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        from dlrun.serving import predict_frame

        info, a, mode = data.info, data.arrays, str(cfg.task.mode)
        model = _inner(served)
        report = Report()
        x = a["x_test"]
        if mode == "denoise":
            noisy = add_noise(x, str(cfg.task.noise.kind), float(cfg.task.noise.level), info.kind == "image",
                              int(cfg.trainer.seed) + 2)
            rec = model.predict(noisy, verbose=0)
            report.metrics["test/mse"] = _mse(rec, x)
            report.metrics["test/noisy_mse"] = _mse(noisy, x)
            report.metrics["test/denoise_ratio"] = report.metrics["test/mse"] / max(report.metrics["test/noisy_mse"], 1e-12)
            report.primary = "test/mse"
        else:
            rec = model.predict(x, verbose=0)
            noisy = None
            report.metrics["test/mse"] = _mse(rec, x)
            report.primary = "test/mse"
        if info.bounded:
            p = np.clip(rec, 1e-7, 1 - 1e-7)
            report.metrics["test/bce"] = float(-np.mean(x * np.log(p) + (1 - x) * np.log(1 - p)))
        if info.kind == "image":
            report.figures.update(grids(x, noisy, rec))
            if isinstance(model.get_layer("encoder").output, list | tuple):
                report.figures.update(vae_figures(model.get_layer("decoder"), int(cfg.trainer.seed)))
        report.figures["latent.png"] = latent_scatter(model, x, a.get("a_test") if mode == "outlier" else a["y_test"],
                                               ["normal", "anomaly"] if mode == "outlier" else info.class_names)
        if mode == "outlier":
            answers = predict_frame(served, data.examples["test"])
            scores, labels = answers["score"].to_numpy(), a["a_test"]
            threshold = float(served.meta["threshold"])
            m = outlier_metrics(scores, labels, threshold)
            report.metrics.update({f"test/{k}": v for k, v in m.items()})
            report.primary = "test/roc_auc" if "roc_auc" in m else "test/f1"
            rows = [{"model": f"{cfg.model.name} (autoencoder)", **_headline(m)}]
            report.figures.update(outlier_figures(scores, labels, threshold))
            for name, base in outlier_baselines(cfg, a).items():
                report.metrics.update({f"baseline/{name}/{k}": v for k, v in base.items()})
                rows.append({"model": name, **_headline(base)})
            report.tables["comparison"] = rows
        return report

    def score(self, cfg, served: Served, examples: Examples) -> Report:
        from dlrun.serving import predict_frame

        answers = predict_frame(served, examples)
        if "score" in answers and examples.targets is not None:
            labels = np.asarray(examples.targets).astype(int)
            return Report({k: v for k, v in outlier_metrics(answers["score"], labels,
                                                           float(served.meta["threshold"])).items()}, primary="f1")
        return Report({"mse": float(np.mean(answers["error"]))}, primary="mse")

    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """Tabular: a CSV of rows (the label column optional); images: an image file or folder."""
        meta = served.meta if served is not None else {}
        if meta.get("kind") == "series":
            return _read_series(cfg, source, meta)
        if meta.get("kind", "tabular") == "image":
            from dlrun.tasks.image import ImageTask

            ex = ImageTask().read(cfg, source, served)
            return Examples(ex.inputs, None, ex.rows, ex.name, ex.source)
        from pathlib import Path

        from dlrun.data.csv import FileOptions, read_csv

        if not source:
            raise DlrunError("no input file", "input=<rows.csv>")
        opts = FileOptions.of(cfg.data)
        frame = read_csv(source, sep=opts.sep, header=True, min_columns=1, encoding=opts.encoding)
        target = cfg.data.get("target")
        truth = frame[target].to_numpy() if target and target in frame.columns else None
        return Examples(frame, truth, frame, Path(str(source)).stem, str(source))


def windows(values, steps, window: int, stride: int):
    """(windows (n, window, columns), window labels (any labelled step), start rows) of a part."""
    if len(values) < window:
        return np.zeros((0, window, values.shape[1]), "float32"), np.zeros(0, "int64"), np.zeros(0, int)
    w = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)[::stride]  # (n, columns, window)
    lab = np.lib.stride_tricks.sliding_window_view(steps, window)[::stride].max(axis=1)
    return np.ascontiguousarray(w.transpose(0, 2, 1)).astype("float32"), lab.astype("int64"), np.arange(len(w)) * stride


def _read_series(cfg, source: str, meta: dict) -> Examples:
    """A CSV series in time order -> the windows the model takes (training window and stride);
    an `anomaly` column, when present, labels the steps."""
    from pathlib import Path

    import pandas as pd

    from dlrun.data.csv import FileOptions, read_csv

    if not source:
        raise DlrunError("no input file", "input=<series.csv>")
    opts = FileOptions.of(cfg.data)
    frame = read_csv(source, sep=opts.sep, header=True, min_columns=1, encoding=opts.encoding)
    cols = list(meta["columns"])
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DlrunError(f"{source}: no column '{missing[0]}'", f"the model takes: {', '.join(cols)}")
    steps = frame["anomaly"].to_numpy() if "anomaly" in frame.columns else np.zeros(len(frame), "int64")
    raw, lab, starts = windows(frame[cols].to_numpy("float32"), steps, int(meta["window"]), int(meta["stride"]))
    if not len(raw):
        raise DlrunError(f"{source}: {len(frame)} rows, fewer than the model's window of {meta['window']}")
    truth = lab if "anomaly" in frame.columns else None
    return Examples(raw, truth, pd.DataFrame({"start": starts}), Path(str(source)).stem, str(source))


def add_noise(x, kind: str, level: float, clip: bool, seed: int):
    """Noisy copy of numpy inputs: Gaussian (sd = level) or salt-and-pepper (fraction = level)."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        out = x + rng.normal(0, level, x.shape).astype("float32")
    else:
        out = x.copy()
        hit = rng.random(x.shape) < level
        out[hit] = (rng.random(int(hit.sum())) < 0.5).astype("float32") * (x.max() if not clip else 1.0)
    return np.clip(out, 0, 1).astype("float32") if clip else out.astype("float32")


def _tf_noise(b, kind: str, level: float, clip: bool):
    import tensorflow as tf

    if kind == "gaussian":
        out = b + tf.random.normal(tf.shape(b), stddev=level)
    else:
        hit = tf.random.uniform(tf.shape(b)) < level
        salt = tf.cast(tf.random.uniform(tf.shape(b)) < 0.5, b.dtype)
        out = tf.where(hit, salt, b)
    return tf.clip_by_value(out, 0.0, 1.0) if clip else out


def _mse(a, b) -> float:
    return float(np.mean((np.asarray(a, "float64") - np.asarray(b, "float64")) ** 2))


def _errors(model, x) -> np.ndarray:
    rec = model.predict(x, verbose=0, batch_size=256)
    return np.mean((rec - x) ** 2, axis=tuple(range(1, x.ndim)))


def _inner(served: Served):
    """The trained autoencoder inside the served model (model units in, model units out)."""
    for layer in served.model.layers:
        if hasattr(layer, "get_layer") and any(s.name == "encoder" for s in getattr(layer, "layers", [])):
            return layer
    raise DlrunError("the served model holds no autoencoder")


def _take(ex: Examples, i) -> Examples:
    inputs = ex.inputs.iloc[i].reset_index(drop=True) if hasattr(ex.inputs, "iloc") else ex.inputs[i]
    rows = ex.rows.iloc[i].reset_index(drop=True) if ex.rows is not None else None
    return Examples(inputs, None if ex.targets is None else np.asarray(ex.targets)[i], rows, ex.name, ex.source)


def _headline(m: dict) -> dict:
    return {k: round(m[k], 4) for k in ("roc_auc", "pr_auc", "f1", "precision_anomaly", "recall_anomaly",
                                        "threshold") if k in m}
