"""The run contract: what a task gets from the runner and what it hands back.

    task.data(cfg, global_batch)        -> Data       splits (tf.data or anything), raw examples,
                                                      fitted preprocessing, dataset records
    task.objective(cfg, info)           -> Objective  the primary metric and its direction
    task.build_model(cfg, info)         -> model      (inside the strategy scope)
    task.fit(cfg, model, data, run)     -> Fit        `run` is a RunHandle (below)
    task.serving(cfg, model, data)      -> Served     raw inputs in, answers in the user's units
    task.evaluate(cfg, served, data)    -> Report     on the test split's raw examples
    task.read(cfg, path)                -> Examples   a user's file or folder (eval, predict)
    task.score(cfg, served, examples)   -> Report     metrics on any labelled examples
    task.predict(cfg, served, examples) -> DataFrame  one row of answers per example

This module is neutral ground: data sources, models and tasks import it, it imports none of
them, and nothing here imports TensorFlow, MLflow or rich.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

TARGETS = ("multiclass", "binary", "regression", "multilabel")

# The one table of metric directions: every place that must know whether a metric goes up or
# down (checkpoint, early stopping, LR on plateau, a sweep's `metric:`) asks `maximized`. A task's
# own objective is asked first where there is one; "loss" anywhere in a name means minimise, as in Keras.
MAXIMIZED = frozenset({"accuracy", "auc", "precision", "recall", "f1", "f1_macro", "r2", "map", "map50", "map75",
                       "mean_return", "exact_match", "token_accuracy", "bleu", "roc_auc", "pr_auc",
                       "mean_iou", "pixel_accuracy", "dice", "label_accuracy"})
MINIMIZED = frozenset({"mae", "mse", "rmse", "mape", "msle", "bits_per_char", "perplexity", "frechet_distance"})
_SPLIT_PREFIXES = ("val_", "val/", "train/", "test/", "objective/")


def metric_base(name: str) -> str:
    """A metric's name without its split: val_accuracy, val/accuracy, test/accuracy -> accuracy."""
    name = str(name)
    for prefix in _SPLIT_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def maximized(name: str) -> bool | None:
    """Whether higher is better for a metric name (with or without its split prefix); None when
    the name says nothing (the caller asks for an explicit min/max instead of guessing)."""
    base = metric_base(name)
    if "loss" in base:
        return False
    if base in MAXIMIZED or re.fullmatch(r"top\d+_accuracy", base):
        return True
    if base in MINIMIZED:
        return False
    return None


@dataclass(frozen=True)
class Objective:
    """A task's primary metric: its unprefixed name and whether higher is better.

    Every Fit.history (Keras' and the custom loops') has it as `val_<name>` (validation) and
    `<name>` (training); the tracker files them as `val/<name>`, `train/<name>`; the report
    has `test/<name>`.
    """

    name: str
    maximize: bool
    chance: float | None = None  # what guessing reaches (a classifier's majority-class share), where known

    @property
    def val(self) -> str:
        return f"val_{self.name}"

    @property
    def test(self) -> str:
        return f"test/{self.name}"

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.maximize else value < best


@dataclass
class DataInfo:
    """What the model builder and the report need to know about a data set.

    Tasks with more to say subclass it with typed fields (see tasks/sequence.py SeriesInfo).
    """

    name: str  # source name, e.g. "insurance", a file stem or a generator
    input_shape: tuple = ()  # one example as the model sees it, without the batch axis
    target: str = ""  # one of TARGETS, or a task's own kind ("reconstruction", "policy", ...)
    num_classes: int | None = None
    class_names: list[str] | None = None
    output_dim: int = 1  # regression outputs (or forecast horizon)
    feature_names: list[str] | None = None  # the model's input columns after preprocessing
    target_column: str | None = None
    source: str = ""  # where the data came from: a path, URL or generator spec
    sizes: dict[str, int] = field(default_factory=dict)  # examples per split
    steps_per_epoch: int | None = None  # set by the runner from the (limited) training split


@dataclass
class Examples:
    """Examples as a user has them: the served model's raw inputs, plus the true answers when known.

    inputs: what the served model takes (a dict of column arrays, an image or window array,
    an array of strings). targets: the answers in the user's units (class names, values) or
    None. rows: a pandas DataFrame with one row per example, written beside predictions and
    logged as the MLflow dataset.
    """

    inputs: Any
    targets: Any = None
    rows: Any = None
    name: str = ""
    source: str = ""

    def __len__(self) -> int:
        x = self.inputs
        if isinstance(x, dict):
            x = next(iter(x.values()))
        return len(x)


@dataclass
class DatasetRecord:
    """One MLflow dataset input: named after its source, with the split's rows and context."""

    name: str
    source: str  # file path, URI, or a generator spec such as "dlrun:insurance?n=1500&seed=42"
    context: str  # training | validation | testing | evaluation
    frame: Any = None  # pandas DataFrame (or numpy array) of the rows
    targets: str | None = None  # target column of `frame`


@dataclass
class Data:
    """A task's data: splits for training, raw examples for serving, records for MLflow.

    train/val/test: batched tf.data.Dataset splits for Keras, or whatever the task's fit takes
    (an environment factory); any may be None. The runner only caps what is a tf.data.Dataset.
    arrays: preprocessed numpy arrays for baselines. examples: raw examples per split ("test"
    at least for a supervised task). preprocess: the fitted raw-input -> model-input transform
    (Keras layers or a model) that `serving` puts in front of the trained network.
    """

    info: DataInfo
    train: Any = None
    val: Any = None
    test: Any = None
    arrays: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, Examples] = field(default_factory=dict)
    records: list[DatasetRecord] = field(default_factory=list)
    preprocess: Any = None
    warnings: list[str] = field(default_factory=list)  # shown as one line each, logged as a run tag
    notes: dict[str, str] = field(default_factory=dict)  # choices made from the data: run tag -> text, printed


@dataclass
class Served:
    """The model people use after training: raw inputs in, answers in the user's units out.

    model: a Keras model (preprocessing inside; a dict of named outputs). example: a few raw
    inputs (MLflow's input example and signature). output_columns: names for the last axis of
    2-D outputs, e.g. {"probability": class names}, so predictions become readable columns.
    meta: JSON-able facts kept beside the model (image size and pixel scale, window length)
    that `Task.read` uses to turn a user's files into inputs.
    """

    model: Any
    example: Any = None
    output_columns: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # saved with the model: what reading inputs needs


@dataclass
class Fit:
    """What training hands back to the runner.

    history: name -> values, one per `unit` (epoch, update, episode, ...), with Keras-style
    names everywhere (`loss`, `val_loss`, `val_mean_return`: no train/ or val/ prefixes, which
    only the tracker adds); NaN where a row has no value (a custom loop validates every few
    rows). steps: the step numbers of those values when they are not 1, 2, 3, ... (e.g.
    environment steps). seen:
    samples or environment steps trained on. best_*: the best value of the objective on
    validation data and where (the runner restores the kept best weights).
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    unit: str = "epoch"
    steps: list[int] | None = None
    seen: int | None = None
    best_value: float | None = None
    best_step: int | None = None


@dataclass
class Report:
    """What a task hands back to the runner to log and show.

    metrics: flat name -> float ("test/accuracy", "baseline/random_forest/accuracy").
    tables: name -> list of row dicts (shown as rich tables, logged as JSON).
    figures: file name -> matplotlib Figure (logged as PNG under plots/).
    texts: file name -> text (samples, TSV files; logged as artifacts).
    files: artifact path -> a local file the task wrote (binary results: videos).
    warnings: lines the user must see beside the results (a network that loses to a baseline
    on validation data, see metrics.losing_to_baseline); printed and added to the run's
    `dlrun.warnings` tag by the runner.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    primary: str | None = None  # e.g. "test/accuracy"
    warnings: list[str] = field(default_factory=list)

    def merge(self, other: Report) -> Report:
        self.metrics.update(other.metrics)
        self.tables.update(other.tables)
        self.figures.update(other.figures)
        self.texts.update(other.texts)
        self.files.update(other.files)
        self.primary = self.primary or other.primary
        self.warnings += [w for w in other.warnings if w not in self.warnings]
        return self

    def prefixed(self, prefix: str) -> Report:
        """The same report with every metric name under `prefix/`."""
        return Report({f"{prefix}/{k}": v for k, v in self.metrics.items()}, self.tables, self.figures,
                      self.texts, self.files, primary=f"{prefix}/{self.primary}" if self.primary else None,
                      warnings=self.warnings)


class RunHandle(Protocol):
    """What `Task.fit` gets from the runner (dlrun/training/handle.py implements it).

    Keras tasks pass `callbacks` to fit (checkpoint, early stopping, progress, MLflow, stop
    flag); custom loops (dlrun/rl/learn.py) call `progress`/`advance`, `log_keras` for their
    rows, `begin`/`end_epoch`/`end` so the same callbacks act at their evaluations, and check
    `should_stop`.
    """

    callbacks: list  # Keras callbacks built from cfg.trainer for this run
    objective: Objective
    workdir: Path  # this run's own folder (checkpoints, backups)
    is_chief: bool  # only the chief logs and saves; workers get a temporary folder

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Metrics at `step` (any unit), buffered and sent to MLflow in batches."""

    def log_keras(self, step: int, logs: dict[str, float]) -> None:
        """Keras-style logs (`loss`, `val_mean_return`) at `step`: MLflow's train/…, val/…."""

    def begin(self, model) -> None:
        """A custom loop starts training `model`: the run's callbacks get it and on_train_begin."""

    def end_epoch(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        """A custom loop's evaluation number `epoch`, at `step`: logged, and on_epoch_end for the
        callbacks (best checkpoint, early stopping, LR on plateau, Optuna, TensorBoard)."""

    def end(self) -> None:
        """A custom loop ended: on_train_end for the callbacks."""

    def progress(self, total: int, unit: str) -> None:
        """Start a progress display of `total` `unit`s (steps, episodes, epochs)."""

    def advance(self, done: int, metrics: dict[str, float] | None = None) -> None:
        """Progress so far (absolute count) with a few live numbers to show."""

    @property
    def should_stop(self) -> bool:
        """True after Ctrl-C or SIGTERM: finish the current step and return."""

    def keep_best(self, model, value: float, step: int) -> bool:
        """Custom loops: remember the model if `value` of the objective is the best so far."""

    def fit_result(self, history: dict, unit: str = "epoch", steps=None, seen=None) -> Fit:
        """A Fit with the best value/step/path this handle kept."""
