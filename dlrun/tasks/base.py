"""What a task is: a data builder, a model builder, a fit step and an evaluation.

A task is one subclass of `Task` registered with `@TASKS.register(...)`. The runner calls
`data -> build_model -> fit -> evaluate` and logs what comes back; tasks never call MLflow or
rich. The defaults here serve supervised Keras tasks; RL overrides `fit`, detection
overrides `evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TARGETS = ("multiclass", "binary", "regression", "multilabel")


@dataclass
class DataInfo:
    """What the model builder and the report need to know about a data set."""

    name: str  # data source name, e.g. "insurance"
    input_shape: tuple  # one example, without the batch axis
    target: str  # one of TARGETS
    num_classes: int | None = None  # multiclass/binary/multilabel
    class_names: list[str] | None = None
    output_dim: int = 1  # regression outputs (or forecast horizon)
    feature_names: list[str] | None = None
    source: str = ""  # where the data came from (path, URL or generator spec)
    sizes: dict[str, int] = field(default_factory=dict)  # examples per split
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific (scalers, vocab, ...)


@dataclass
class Data:
    """Batched tf.data pipelines for each split plus the arrays behind them.

    `arrays` holds numpy arrays (x_train, y_train, x_val, y_val, x_test, y_test) where the data
    fits in memory: baselines, the MLflow dataset input and eval use them.
    """

    train: Any
    val: Any | None
    test: Any
    info: DataInfo
    arrays: dict[str, Any] = field(default_factory=dict)
    frame: Any | None = None  # a pandas DataFrame of the raw data, for the MLflow dataset input


@dataclass
class Report:
    """What a task hands back to the runner to log and show.

    metrics: flat name -> float ("test/accuracy", "baseline/random_forest/accuracy").
    tables: name -> list of row dicts (shown as rich tables, logged as JSON).
    figures: file name -> matplotlib Figure (logged as PNG under plots/).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    primary: str | None = None  # the metric a sweep optimises, e.g. "test/accuracy"

    def merge(self, other: Report) -> Report:
        self.metrics.update(other.metrics)
        self.tables.update(other.tables)
        self.figures.update(other.figures)
        self.primary = self.primary or other.primary
        return self


class Task:
    """Base class: supervised Keras training. Override what differs."""

    name = "task"

    def data(self, cfg, batch_size: int) -> Data:
        """Build the data; `batch_size` is the global batch size (per-replica x replicas)."""
        raise NotImplementedError

    def build_model(self, cfg, info: DataInfo):
        """Build and compile the model. Called inside the strategy scope."""
        from dlrun.models import build_model
        from dlrun.training.compile import compile_model

        model = build_model(cfg.model, info, task=self.name)
        compile_model(model, cfg, info)
        return model

    def fit(self, cfg, model, data: Data, callbacks: list):
        """Train; returns a dict of per-epoch history lists."""
        from dlrun.training.loop import fit

        return fit(cfg, model, data, callbacks)

    def evaluate(self, cfg, model, data: Data) -> Report:
        """Test metrics and tables; the default is Keras' evaluate on the test split."""
        values = model.evaluate(data.test, verbose=0, return_dict=True)
        return Report(metrics={f"test/{k}": float(v) for k, v in values.items()}, primary="test/loss")
