"""The run: one MLflow run per `dlrun train`, opened and closed by `tracked_run`.

Logged: the resolved config (flattened params + config.yaml), overrides and command line,
versions, devices, strategy, git commit (tags), metrics per epoch or per step of any unit
(buffered, sent in batches), the datasets per split (tracking.datasets), the task's Report
(test metrics linked to the logged model and the test dataset, tables, texts, figures) and the
served model (raw inputs in) as an MLflow pyfunc model and as native files. A DlrunError or
crash ends the run FAILED with the reason; Ctrl-C or SIGTERM ends it KILLED with the reason.
The tracker is handed what it logs; it reads no task data.

MLflow's fluent API opens and ends the run (it owns the system-metrics monitor and the active
run that `Model.log` logs to); everything logged in between goes through one `MlflowClient`
bound to the tracking URI and addressed by the run id (`Tracker.client`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dlrun.tracking.store import open_store, quiet_mlflow_logs, store_errors

ERROR_TAG = "dlrun.error"
FLUSH_S = 5.0
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
    """The commit of dlrun's own code: DLRUN_COMMIT where it is set (the Docker image, built with
    --build-arg COMMIT, holds no repository), else git in the package's folder (a checkout)."""
    if os.environ.get("DLRUN_COMMIT"):
        return os.environ["DLRUN_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def epoch_metric_name(key: str) -> str:
    """A Keras log key as an MLflow metric name: val_x -> val/x, x -> train/x."""
    if key in ("learning_rate", "lr"):
        return "train/learning_rate"
    return f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"


class Tracker:
    """One MLflow run: opened and ended with the fluent API, logged to through `client` by run
    id; every method is a no-op when disabled (tracking=off, or a worker that is not the chief
    of a multi-worker run)."""

    def __init__(self, tracking_cfg, enabled: bool = True):
        self.cfg = tracking_cfg
        self.enabled = bool(tracking_cfg.enabled) and enabled
        self.run_id: str | None = None
        self.client = None  # the MlflowClient everything between start and end is logged with
        self._mlflow = None
        self._buffer: list = []
        self._last_flush = time.monotonic()
        self.hold = False  # metrics wait for an explicit flush (sent with each training backup)
        self.resumed_status: str | None = None  # a resumed run's status before this process took it up

    @property
    def mlflow(self):
        if self._mlflow is None:
            import mlflow

            quiet_mlflow_logs()
            self._mlflow = mlflow
        return self._mlflow

    # -- run lifecycle -------------------------------------------------------------------
    def start(self, cfg, task_name: str, model_name: str, overrides: list[str], resume_run_id: str | None = None,
              resumed_at: int | None = None) -> None:
        """Open the run (a new one, or `resume_run_id` again for a resumed training)."""
        if not self.enabled:
            return
        from dlrun.startup import paused_gc

        with paused_gc():  # MLflow's and its store's modules are imported here
            mlflow = self.mlflow
            if self.cfg.uri:
                mlflow.set_tracking_uri(self.cfg.uri)
            uri = mlflow.get_tracking_uri()
            open_store(uri)
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=uri)
        run_name = self.cfg.run_name or f"{task_name}-{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        system = bool(self.cfg.system_metrics)
        if system:
            mlflow.set_system_metrics_sampling_interval(float(self.cfg.system_metrics_interval))
            mlflow.set_system_metrics_samples_before_logging(1)
        with store_errors(uri):
            mlflow.set_experiment(self.cfg.experiment or task_name)
            if resume_run_id:
                before = mlflow.get_run(resume_run_id)
                run = mlflow.start_run(run_id=resume_run_id, log_system_metrics=system)
            else:
                run = mlflow.start_run(run_name=run_name, parent_run_id=self.cfg.get("parent_run_id") or None,
                                       log_system_metrics=system)
        self.run_id = run.info.run_id
        if resume_run_id:  # its config, params and datasets are logged already
            self.resumed_status = before.info.status
            self.set_tags({"dlrun.resumed_at_epoch": str(resumed_at), "dlrun.command": " ".join(sys.argv)[:5000],
                           **stop_history(before, resumed_at)})
            if ERROR_TAG in before.data.tags:  # the stop is history now: a finished resume shows no error
                self.client.delete_tag(self.run_id, ERROR_TAG)
            return
        from omegaconf import OmegaConf

        import dlrun

        container = OmegaConf.to_container(cfg, resolve=True)
        self.log_params(flatten({k: v for k, v in container.items() if k != "hydra"}))
        self.client.log_text(self.run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        tags = {
            "dlrun.version": dlrun.__version__,
            "dlrun.task": task_name,
            "dlrun.model": model_name,
            "dlrun.overrides": " ".join(overrides)[:5000],
            "dlrun.command": " ".join(sys.argv)[:5000],  # argv[0] is "dlrun <subcommand>" (cli.py)
            "python.version": sys.version.split()[0],
        }
        if os.environ.get("CUDA_VISIBLE_DEVICES"):  # the GPUs this run was given (a sweep's GPU pool)
            tags["dlrun.cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        tags.update({str(k): str(v) for k, v in (self.cfg.tags or {}).items()})
        self.set_tags(tags)

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        mlflow = self.mlflow
        with contextlib.suppress(Exception):
            self.flush()
        if reason:
            with contextlib.suppress(Exception):
                self.client.set_tag(self.run_id, ERROR_TAG, reason[:5000])
        mlflow.end_run(status=status)
        self.run_id = None

    # -- during the run ------------------------------------------------------------------
    def set_tags(self, tags: dict) -> None:
        if self.enabled and self.run_id:
            from mlflow.entities import RunTag

            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def log_params(self, params: dict) -> None:
        if self.enabled and self.run_id:
            from mlflow.entities import Param

            items = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
            for i in range(0, len(items), 100):  # the store's limit of params per batch
                self.client.log_batch(self.run_id, params=items[i:i + 100], synchronous=True)

    def log_metrics(self, metrics: dict, step: int | None = None, model_id: str | None = None,
                    dataset=None) -> None:
        """Metrics at `step` (0 if None), sent now; `model_id` and `dataset` link them to the
        logged model and an MLflow dataset (the test metrics)."""
        if self.enabled and self.run_id and metrics:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            name, digest = (dataset.name, dataset.digest) if dataset is not None else (None, None)
            items = [Metric(k, float(v), now, int(step or 0), model_id=model_id, dataset_name=name,
                            dataset_digest=digest, run_id=self.run_id) for k, v in metrics.items() if v is not None]
            # synchronous: per-step metrics are batched (log_step), so the few calls left are
            # cheaper than starting and draining MLflow's async queue (~1.3 s per run).
            self.client.log_batch(self.run_id, metrics=items, synchronous=True)

    def log_step(self, step: int, metrics: dict) -> None:
        """Metrics at `step` (any unit), buffered and sent in one batch at most every FLUSH_S
        seconds (and at the end), so fast steps are not slowed by a store round trip each."""
        if not (self.enabled and self.run_id):
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items())
        if not self.hold and time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()

    def log_epoch(self, epoch: int, logs: dict) -> None:
        """Keras logs of epoch `epoch` (0-based) -> train/<m> and val/<m> at step epoch + 1."""
        self.log_keras(epoch + 1, logs)

    def log_keras(self, step: int, logs: dict) -> None:
        """Keras-style logs (loss, val_loss; what every Fit.history holds) -> train/<m> and
        val/<m> at `step` (custom loops log in their own unit, e.g. environment steps)."""
        self.log_step(step, {epoch_metric_name(k): v for k, v in logs.items()})

    def last_step(self, key: str) -> int:
        """The highest step logged for metric `key` in this run (0 if none)."""
        if not (self.enabled and self.run_id):
            return 0
        return max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=0)

    def flush(self) -> None:
        if self._buffer and self.run_id:
            for i in range(0, len(self._buffer), 1000):
                self.client.log_batch(self.run_id, metrics=self._buffer[i:i + 1000])
        self._buffer = []
        self._last_flush = time.monotonic()

    def log_datasets(self, records) -> dict:
        """Each DatasetRecord as an MLflow dataset input named after its source, with its
        context (training, validation, testing); returns context -> MLflow dataset (the test
        one is linked to the test metrics and the logged model)."""
        out: dict = {}
        if not (self.enabled and self.run_id and self.cfg.log_dataset):
            return out
        from dlrun.tracking.datasets import dataset_input, mlflow_dataset

        for rec in records:
            try:
                ds = mlflow_dataset(rec)
                if ds is not None:
                    self.client.log_inputs(self.run_id, datasets=[dataset_input(ds, rec.context)])
                    out[rec.context] = ds
            except Exception as e:  # a dataset record must never fail the run
                self.client.set_tag(self.run_id, "dlrun.dataset_warning", f"{rec.name}: {type(e).__name__}: {e}"[:500])
        if records:
            self.client.set_tag(self.run_id, "dlrun.data_source", records[0].source or records[0].name)
        return out

    def log_path(self, path: Path, dest: str) -> None:
        """A file or a whole folder as artifacts under `dest`, if it exists."""
        if not (self.enabled and self.run_id and path.exists()):
            return
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), dest)
        else:
            self.client.log_artifact(self.run_id, str(path), dest)

    def log_report(self, report, model_id: str | None = None, dataset=None) -> None:
        """Metrics (test/* linked to the logged model and the test dataset), tables, texts, figures."""
        if not (self.enabled and self.run_id):
            return
        linked = {k: float(v) for k, v in report.metrics.items() if k.startswith("test/") and v is not None}
        rest = {k: v for k, v in report.metrics.items() if k not in linked}
        if linked and (model_id or dataset is not None):
            self.log_metrics(linked, model_id=model_id, dataset=dataset)
        else:
            rest.update(linked)
        self.log_metrics(rest)
        for name, rows in report.tables.items():
            self.client.log_text(self.run_id, json.dumps(rows, indent=1, default=str), f"tables/{name}.json")
        for name, text in report.texts.items():
            self.client.log_text(self.run_id, text, name)
        for name, path in report.files.items():
            self.client.log_artifact(self.run_id, str(path), str(Path(name).parent) if "/" in name else None)
        self.log_figures(report.figures)

    def log_figures(self, figures: dict) -> None:
        if not (self.enabled and self.run_id and self.cfg.log_plots):
            return
        import matplotlib.pyplot as plt

        for name, fig in figures.items():
            fname = name if name.endswith(".png") else f"{name}.png"
            self.client.log_figure(self.run_id, fig, f"plots/{fname}")
            plt.close(fig)

    def log_served(self, served, folder: Path, task: str) -> str | None:
        """The served model, saved to `folder` (model.keras + serving.json), logged as run
        artifacts under served/ and as the MLflow pyfunc model 'model' with a signature and
        an input example of raw inputs. Returns the MLflow model id."""
        from dlrun import serving

        serving.save(served, folder, task)
        if not (self.enabled and self.run_id and self.cfg.log_model):
            return None
        import keras
        import tensorflow as tf

        import dlrun.pyfunc

        mlflow = self.mlflow
        self.client.log_artifacts(self.run_id, str(folder), "served")
        example, answers = serving.example_frame(served)
        signature = None
        if example is not None:
            from mlflow.models import infer_signature

            example = signature_input(example)
            signature = infer_signature(example, answers)
        # mlflow.pyfunc.log_model, less its check that loads the logged model again to answer the
        # input example (~0.5 s): the answers above came from this very model (Model.log with
        # the pyfunc flavor is what log_model calls; validate_serving_input is its switch)
        info = mlflow.models.Model.log(
            artifact_path=None, name="model", flavor=_PyfuncFlavor, flavor_name="pyfunc.ModelFromCode",
            validate_serving_input=False,
            python_model=dlrun.pyfunc.__file__, artifacts={"served": str(folder)},
            signature=signature, input_example=example,
            pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}",
                              f"mlflow=={mlflow.__version__}", "pandas"],
        )
        return info.model_id


def stop_history(run, resumed_at) -> dict:
    """The tag keeping why and where a resumed run had stopped, one entry per stop:
    dlrun.stops = 'KILLED, resumed after epoch 12: terminated (SIGTERM); RUNNING, resumed after ...'."""
    status = run.info.status
    why = run.data.tags.get(ERROR_TAG) or ("its process was gone (SIGKILL?)" if status == "RUNNING" else "")
    entry = f"{status}, resumed after epoch {resumed_at}" + (f": {why}" if why else "")
    earlier = run.data.tags.get("dlrun.stops")
    return {"dlrun.stops": (f"{earlier}; {entry}" if earlier else entry)[-5000:]}

class _PyfuncFlavor:
    """mlflow.pyfunc as the flavor module of `Model.log`, which hands the flavor's save_model
    its own switches too (validate_serving_input), where mlflow.pyfunc.save_model takes none."""

    @staticmethod
    def save_model(validate_serving_input=None, **kwargs):  # Model.log reads the switch itself
        import mlflow.pyfunc

        return mlflow.pyfunc.save_model(**kwargs)


def signature_input(example):
    """MLflow takes DataFrames and arrays: a dict of column arrays becomes a DataFrame; a dict
    holding a vector per example (a GAN's noise) stays a dict of arrays (a tensor signature)."""
    import numpy as np

    if isinstance(example, dict):
        if any(np.ndim(v) > 1 for v in example.values()):
            return {k: np.asarray(v) for k, v in example.items()}
        import pandas as pd

        return pd.DataFrame({k: list(np.asarray(v)) for k, v in example.items()})
    return example

@contextlib.contextmanager
def tracked_run(tracker: Tracker):
    """End the active run FINISHED, FAILED (with reason) or KILLED (Ctrl-C, SIGTERM)."""
    from dlrun.errors import DlrunError, Interrupted
    from dlrun.tracking.datasets import no_integer_schema_warning

    try:
        with no_integer_schema_warning():  # datasets and the signature of rows with integer columns
            yield tracker
    except Interrupted as e:
        tracker.end("KILLED", e.reason)
        raise
    except KeyboardInterrupt:
        tracker.end("KILLED", "interrupted (Ctrl-C)")
        raise
    except DlrunError as e:
        e.run_id = tracker.run_id  # a sweep records a job that failed before its run started
        tracker.end("FAILED", str(e))
        raise
    except BaseException as e:
        tracker.end("FAILED", f"{type(e).__name__}: {e}")
        raise
    else:
        tracker.end("FINISHED")
