"""Everything MLflow: one run per `dlrun train`, opened and closed by `tracked_run`.

Logged: the resolved config (flattened params + config.yaml), overrides and command line,
versions, devices, strategy, git commit (tags), per-epoch metrics (step = epoch), the task's
Report (metrics, tables, figures), learning curves, the model (MLflow Keras flavour that
`mlflow.pyfunc.load_model` loads, plus the native .keras file) and the dataset as an input.
A DlrunError or crash ends the run FAILED with the reason; Ctrl-C ends it KILLED.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ERROR_TAG = "dlrun.error"
EPOCH_FLUSH_S = 5.0
MAX_PARAM_LEN = 6000


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}; lists become their JSON text."""
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        text = json.dumps(d) if isinstance(d, list | tuple) else str(d)
        out[prefix[:-1]] = text[:MAX_PARAM_LEN]
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class Tracker:
    """A thin facade over the MLflow fluent API; every method is a no-op when disabled."""

    def __init__(self, tracking_cfg):
        self.cfg = tracking_cfg
        self.enabled = bool(tracking_cfg.enabled)
        self.run_id: str | None = None
        self._mlflow = None
        self._epoch_buffer: list = []
        self._last_flush = time.monotonic()

    @property
    def mlflow(self):
        if self._mlflow is None:
            import mlflow

            quiet_mlflow_logs()

            self._mlflow = mlflow
        return self._mlflow

    # -- run lifecycle -------------------------------------------------------------------
    def start(self, cfg, task_name: str, model_name: str, overrides: list[str]) -> None:
        if not self.enabled:
            return
        mlflow = self.mlflow
        if self.cfg.uri:
            mlflow.set_tracking_uri(self.cfg.uri)
        check_reachable(mlflow.get_tracking_uri())
        mlflow.set_experiment(self.cfg.experiment or task_name)
        run_name = self.cfg.run_name or f"{task_name}-{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = mlflow.start_run(run_name=run_name)
        self.run_id = run.info.run_id
        from omegaconf import OmegaConf

        import dlrun

        container = OmegaConf.to_container(cfg, resolve=True)
        params = flatten({k: v for k, v in container.items() if k != "hydra"})
        items = list(params.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i:i + 100]))
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        tags = {
            "dlrun.version": dlrun.__version__,
            "dlrun.task": task_name,
            "dlrun.model": model_name,
            "dlrun.overrides": " ".join(overrides)[:5000],
            "dlrun.command": " ".join(sys.argv)[:5000],  # argv[0] is "dlrun <subcommand>" (cli.py)
            "python.version": sys.version.split()[0],
        }
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        tags.update({str(k): str(v) for k, v in (self.cfg.tags or {}).items()})
        mlflow.set_tags(tags)

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        mlflow = self.mlflow
        with contextlib.suppress(Exception):
            self.flush_epochs()
        if reason:
            with contextlib.suppress(Exception):
                mlflow.set_tag(ERROR_TAG, reason[:5000])
        mlflow.end_run(status=status)
        self.run_id = None

    # -- during the run ------------------------------------------------------------------
    def set_tags(self, tags: dict) -> None:
        if self.enabled and self.run_id:
            self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_params(self, params: dict) -> None:
        if self.enabled and self.run_id:
            self.mlflow.log_params({k: str(v)[:MAX_PARAM_LEN] for k, v in params.items()})

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self.enabled and self.run_id and metrics:
            clean = {k: float(v) for k, v in metrics.items() if v is not None}
            # synchronous: per-epoch metrics are batched (log_epoch), so the few calls left are
            # cheaper than starting and draining MLflow's async queue (~1.3 s per run).
            self.mlflow.log_metrics(clean, step=step, synchronous=True)

    def log_epoch(self, epoch: int, logs: dict) -> None:
        """Keras logs -> train/<m> and val/<m> metrics at step = epoch (1-based).

        Epochs are buffered and sent in one batch at most every EPOCH_FLUSH_S seconds (and at
        the end), so fast epochs are not slowed by a store round trip each.
        """
        if not (self.enabled and self.run_id):
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for k, v in logs.items():
            if k in ("learning_rate", "lr"):
                key = "train/learning_rate"
            elif k.startswith("val_"):
                key = f"val/{k[4:]}"
            else:
                key = f"train/{k}"
            self._epoch_buffer.append(Metric(key, float(v), now, epoch + 1))
        if time.monotonic() - self._last_flush >= EPOCH_FLUSH_S:
            self.flush_epochs()

    def flush_epochs(self) -> None:
        if self._epoch_buffer and self.run_id:
            from mlflow.tracking import MlflowClient

            client = MlflowClient()
            for i in range(0, len(self._epoch_buffer), 1000):
                client.log_batch(self.run_id, metrics=self._epoch_buffer[i:i + 1000])
        self._epoch_buffer = []
        self._last_flush = time.monotonic()

    def log_dataset(self, data) -> None:
        """The training data as an MLflow dataset input (source and digest)."""
        if not (self.enabled and self.run_id and self.cfg.log_dataset):
            return
        import warnings

        mlflow = self.mlflow
        info = data.info
        context = "training"
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        try:
            if data.frame is not None:  # the whole table, all splits
                context = "all splits"
                ds = _try_source(lambda src: mlflow.data.from_pandas(
                    data.frame, source=src, name=info.name,
                    targets=info.extra.get("target_column")), info.source)
            elif "x_train" in data.arrays:
                ds = _try_source(lambda src: mlflow.data.from_numpy(
                    data.arrays["x_train"], source=src, name=info.name,
                    targets=data.arrays.get("y_train")), info.source)
            else:
                return
            mlflow.log_input(ds, context=context)
        except Exception as e:  # a dataset record must never fail the run
            mlflow.set_tag("dlrun.dataset_warning", f"{type(e).__name__}: {e}"[:500])
        mlflow.set_tag("dlrun.data_source", info.source or info.name)

    def log_path(self, path: Path, dest: str) -> None:
        """A file or a whole folder as artifacts under `dest`, if it exists."""
        if not (self.enabled and self.run_id and path.exists()):
            return
        if path.is_dir():
            self.mlflow.log_artifacts(str(path), dest)
        else:
            self.mlflow.log_artifact(str(path), dest)

    def log_report(self, report) -> None:
        if not (self.enabled and self.run_id):
            return
        self.log_metrics(report.metrics)
        for name, rows in report.tables.items():
            self.mlflow.log_text(json.dumps(rows, indent=1, default=str), f"tables/{name}.json")
        if self.cfg.log_plots:
            self.log_figures(report.figures)

    def log_figures(self, figures: dict) -> None:
        if not (self.enabled and self.run_id and self.cfg.log_plots):
            return
        import matplotlib.pyplot as plt

        for name, fig in figures.items():
            fname = name if name.endswith(".png") else f"{name}.png"
            self.mlflow.log_figure(fig, f"plots/{fname}")
            plt.close(fig)

    def log_model(self, model, data) -> None:
        """The model as an MLflow Keras model (pyfunc-loadable) and as a native .keras file."""
        if not (self.enabled and self.run_id and self.cfg.log_model):
            return
        import keras
        import tensorflow as tf

        mlflow = self.mlflow
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            model.save(path)
            mlflow.log_artifact(str(path), "native")
        example = _input_example(data)
        signature = None
        if example is not None:
            from mlflow.models import infer_signature

            with contextlib.suppress(Exception):
                signature = infer_signature(example, model.predict(example, verbose=0))
        mlflow.keras.log_model(
            model, name="model", signature=signature,
            pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        )


def quiet_mlflow_logs() -> None:
    """Keep MLflow's and alembic's INFO chatter (store creation, new experiment) out of the terminal."""
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """An http(s) tracking URI must answer /health quickly: MLflow's own client would retry
    a dead server for minutes before failing."""
    import urllib.error
    import urllib.request

    from dlrun.errors import DlrunError

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered: a proxy or an older server without /health
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DlrunError(f"cannot reach the MLflow server at {uri}: {reason}",
                         "start it (mlflow server) or drop tracking.uri to use ./mlflow.db") from None


def _try_source(make, source: str):
    """Build an MLflow dataset with `source`: a file path or URI MLflow can resolve, else a
    GeneratorSource carrying the spec (generated and package-bundled data have no file)."""
    if not source:
        return make(None)
    if "://" in source or Path(source).exists():
        try:
            return make(source)
        except Exception:  # MLflow has no resolver for this kind of URI
            pass
    return make(generator_source(source))


def generator_source(spec: str):
    """An MLflow DatasetSource for data made by code: its spec, e.g. 'dlrun:insurance?seed=42'."""
    from mlflow.data.dataset_source import DatasetSource

    class GeneratorSource(DatasetSource):
        def __init__(self, spec: str):
            self.spec = spec

        @staticmethod
        def _get_source_type() -> str:
            return "generator"

        def load(self):
            raise NotImplementedError(f"rebuild it with dlrun from the run's config ({self.spec})")

        @staticmethod
        def _can_resolve(raw_source) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source):
            return cls(str(raw_source))

        def to_dict(self) -> dict:
            return {"spec": self.spec}

        @classmethod
        def from_dict(cls, source_dict: dict):
            return cls(source_dict["spec"])

    return GeneratorSource(spec)


def _input_example(data):
    x = data.arrays.get("x_test")
    if x is None or isinstance(x, dict):
        return None
    return x[:5]


@contextlib.contextmanager
def tracked_run(tracker: Tracker):
    """End the active run FINISHED, FAILED (with reason) or KILLED (Ctrl-C)."""
    from dlrun.errors import DlrunError

    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.end("KILLED", "interrupted (Ctrl-C)")
        raise
    except DlrunError as e:
        tracker.end("FAILED", str(e))
        raise
    except BaseException as e:
        tracker.end("FAILED", f"{type(e).__name__}: {e}")
        raise
    else:
        tracker.end("FINISHED")


def log_to_existing_run(tracking_cfg, run_id: str, metrics: dict, tables: dict | None = None) -> None:
    """Add metrics (and tables) to a finished run without touching its status (dlrun eval)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_cfg.uri or None)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i:i + 500])
    for name, rows in (tables or {}).items():
        client.log_text(run_id, json.dumps(rows, indent=1, default=str), f"tables/eval_{name}.json")

