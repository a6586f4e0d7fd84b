"""What a task is: the methods of the run contract (dlrun/contract.py), with defaults for
supervised Keras tasks.

A task is one subclass of `Task` registered with `@TASKS.register(...)`. The runner calls
`data -> objective -> build_model -> fit -> serving -> evaluate` and logs what comes back;
`dlrun eval` and `dlrun predict` call `read -> score / predict` on a served model. Tasks never
call MLflow or rich.
"""

from __future__ import annotations

from dlrun.contract import Data, DataInfo, Examples, Fit, Objective, Report, RunHandle, Served
from dlrun.errors import DlrunError

__all__ = ["Data", "DataInfo", "Examples", "Fit", "Objective", "Report", "Served", "Task"]


class Task:
    """Base class: supervised Keras training. Override what differs."""

    name = "task"
    resumable = True  # the runner's backup and trainer.resume apply (training goes through Keras fit)

    def check(self, cfg, strategy) -> None:
        """Refuse, in one line before anything is built or logged, what this task cannot honour
        (trainer options it has no use for, strategies, precisions). Nothing by default."""

    def data(self, cfg, batch_size: int) -> Data:
        """Build the data; `batch_size` is the global batch size (per replica x replicas)."""
        raise NotImplementedError

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        """The primary metric and its direction (checkpoint, early stopping and sweeps follow it).

        `info` is None when asked before any data exists (a sweep learning its direction): a task
        whose objective depends on the data finds out from the config, without building the pipeline."""
        return Objective("loss", maximize=False)

    def build_model(self, cfg, info: DataInfo):
        """Build and compile the model. Called inside the strategy scope."""
        from dlrun.models import build_model
        from dlrun.training.adversarial import wrap
        from dlrun.training.compile import compile_model

        model = wrap(build_model(cfg.model, info, task=self.name), cfg)  # task.adversarial, where set
        compile_model(model, cfg, info)
        return model

    def fit(self, cfg, model, data: Data, run: RunHandle) -> Fit:
        """Train with Keras fit (or trainer.loop=custom) and the run's callbacks."""
        from dlrun.training.handle import keras_fit

        return keras_fit(cfg, model, data, run)

    def serving(self, cfg, model, data: Data) -> Served:
        """The trained network behind the data's fitted preprocessing (raw inputs in)."""
        from dlrun.serving import chain
        from dlrun.training.adversarial import plain

        example = data.examples["test"].inputs if "test" in data.examples else None
        return Served(chain(data.preprocess, plain(model)), example=_head(example))

    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        """The test report: `score` on the test split's raw examples, prefixed test/."""
        return self.score(cfg, served, data.examples["test"]).prefixed("test")

    def score(self, cfg, served: Served, examples: Examples) -> Report:
        """Metrics (unprefixed names), tables and figures of `served` on labelled examples."""
        raise DlrunError(f"task '{self.name}' cannot score examples")

    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """A user's file or folder as raw examples (targets when the file has them); `served`
        is the model that will take them (its inputs may say how to read the file)."""
        raise DlrunError(f"task '{self.name}' does not read input files", "use dlrun eval run_id=...")

    def lens(self, cfg, served: Served):
        """The served model seen from inside, for `dlrun explain` and `dlrun attack`: a
        dlrun.explain.lens.Lens (or a subclass) that finds the network, runs it differentiably
        on images in [0, 1] units and knows the task's loss, score and class to explain."""
        raise DlrunError(f"task '{self.name}' cannot be explained or attacked",
                         "dlrun explain and dlrun attack take image runs (task=cnn)")

    def predict(self, cfg, served: Served, examples: Examples):
        """A pandas DataFrame with one row of answers per example, beside the example's row."""
        from dlrun.serving import predict_frame

        return predict_frame(served, examples)


def _head(x, n: int = 5):
    """The first n examples of an input (a dict of arrays or an array)."""
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: v[:n] for k, v in x.items()}
    return x[:n]
