"""Everything MLflow: one run per `dlrun train`, opened and closed by `tracked_run`.

Logged: the resolved config (flattened params + config.yaml), overrides and command line,
versions, devices, strategy, git commit (tags), metrics per epoch or per step of any unit
(buffered, sent in batches), the datasets per split (named after their source, with their
context), the task's Report (test metrics linked to the logged model and the test dataset,
tables, texts, figures) and the served model (raw inputs in) as an MLflow pyfunc model and as
native files. A DlrunError or crash ends the run FAILED with the reason; Ctrl-C or SIGTERM
ends it KILLED with the reason. The tracker is handed what it logs; it reads no task data.
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
    """A thin facade over the MLflow fluent API; every method is a no-op when disabled
    (tracking=off, or a worker that is not the chief of a multi-worker run)."""

    def __init__(self, tracking_cfg, enabled: bool = True):
        self.cfg = tracking_cfg
        self.enabled = bool(tracking_cfg.enabled) and enabled
        self.run_id: str | None = None
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
        run_name = self.cfg.run_name or f"{task_name}-{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        system = bool(self.cfg.get("system_metrics", False))
        if system:
            mlflow.set_system_metrics_sampling_interval(float(self.cfg.get("system_metrics_interval", 10.0)))
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
            mlflow.set_tags({"dlrun.resumed_at_epoch": str(resumed_at), "dlrun.command": " ".join(sys.argv)[:5000],
                             **stop_history(before, resumed_at)})
            if ERROR_TAG in before.data.tags:  # the stop is history now: a finished resume shows no error
                mlflow.delete_tag(ERROR_TAG)
            return
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
        if os.environ.get("CUDA_VISIBLE_DEVICES"):  # the GPUs this run was given (a sweep's GPU pool)
            tags["dlrun.cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
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
            self.flush()
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
            # synchronous: per-step metrics are batched (log_step), so the few calls left are
            # cheaper than starting and draining MLflow's async queue (~1.3 s per run).
            self.mlflow.log_metrics(clean, step=step, synchronous=True)

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
        from mlflow.tracking import MlflowClient

        return max((m.step for m in MlflowClient().get_metric_history(self.run_id, key)), default=0)

    def flush(self) -> None:
        if self._buffer and self.run_id:
            from mlflow.tracking import MlflowClient

            client = MlflowClient()
            for i in range(0, len(self._buffer), 1000):
                client.log_batch(self.run_id, metrics=self._buffer[i:i + 1000])
        self._buffer = []
        self._last_flush = time.monotonic()

    def log_datasets(self, records) -> dict:
        """Each DatasetRecord as an MLflow dataset input named after its source, with its
        context (training, validation, testing); returns context -> MLflow dataset (the test
        one is linked to the test metrics and the logged model)."""
        out: dict = {}
        if not (self.enabled and self.run_id and self.cfg.log_dataset):
            return out
        mlflow = self.mlflow
        for rec in records:
            try:
                ds = mlflow_dataset(rec)
                if ds is not None:
                    mlflow.log_input(ds, context=rec.context)
                    out[rec.context] = ds
            except Exception as e:  # a dataset record must never fail the run
                mlflow.set_tag("dlrun.dataset_warning", f"{rec.name}: {type(e).__name__}: {e}"[:500])
        if records:
            mlflow.set_tag("dlrun.data_source", records[0].source or records[0].name)
        return out

    def log_path(self, path: Path, dest: str) -> None:
        """A file or a whole folder as artifacts under `dest`, if it exists."""
        if not (self.enabled and self.run_id and path.exists()):
            return
        if path.is_dir():
            self.mlflow.log_artifacts(str(path), dest)
        else:
            self.mlflow.log_artifact(str(path), dest)

    def log_report(self, report, model_id: str | None = None, dataset=None) -> None:
        """Metrics (test/* linked to the logged model and the test dataset), tables, texts, figures."""
        if not (self.enabled and self.run_id):
            return
        linked = {k: float(v) for k, v in report.metrics.items() if k.startswith("test/") and v is not None}
        rest = {k: v for k, v in report.metrics.items() if k not in linked}
        if linked and (model_id or dataset is not None):
            self.mlflow.log_metrics(linked, synchronous=True, model_id=model_id, dataset=dataset)
        else:
            rest.update(linked)
        self.log_metrics(rest)
        for name, rows in report.tables.items():
            self.mlflow.log_text(json.dumps(rows, indent=1, default=str), f"tables/{name}.json")
        for name, text in report.texts.items():
            self.mlflow.log_text(text, name)
        for name, path in report.files.items():
            self.mlflow.log_artifact(str(path), str(Path(name).parent) if "/" in name else None)
        self.log_figures(report.figures)

    def log_figures(self, figures: dict) -> None:
        if not (self.enabled and self.run_id and self.cfg.log_plots):
            return
        import matplotlib.pyplot as plt

        for name, fig in figures.items():
            fname = name if name.endswith(".png") else f"{name}.png"
            self.mlflow.log_figure(fig, f"plots/{fname}")
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
        mlflow.log_artifacts(str(folder), "served")
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


@contextlib.contextmanager
def no_integer_schema_warning():
    """MLflow warns, for every schema it infers from integer columns, that such a column cannot
    hold missing values. dlrun's served models take the user's rows as the run had them; the
    two lines say nothing the user can act on (and were printed on some paths, not others)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer.*")
        yield


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


def mlflow_dataset(rec):
    """An MLflow dataset for a DatasetRecord (pandas or numpy rows; a resolvable source or a spec)."""
    import mlflow

    if rec.frame is None:
        return None
    if hasattr(rec.frame, "columns"):
        targets = rec.targets if rec.targets in rec.frame.columns else None
        return _try_source(lambda src: mlflow.data.from_pandas(rec.frame, source=src, name=rec.name,
                                                                targets=targets), rec.source)
    return _try_source(lambda src: mlflow.data.from_numpy(rec.frame, source=src, name=rec.name), rec.source)


def quiet_mlflow_logs() -> None:
    """Keep MLflow's and alembic's INFO chatter (store creation, new experiment) out of the terminal."""
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for other stores)."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri.split(":", 1)[1].lstrip("/")
    if uri.startswith("sqlite:////"):
        rest = "/" + rest
    return Path(rest.split("?", 1)[0])


def open_store(uri: str) -> None:
    """Check the tracking store before MLflow touches it, and create a new SQLite store under
    a file lock.

    MLflow creates and migrates a SQLite store on first use without a lock: two first runs in
    a fresh folder race ("duplicate column name") and both can die. Its errors for a bad URI,
    a file that is not a database or an unwritable folder are long tracebacks (or minutes of
    retries); each becomes one line naming the path or the URI here. A new store starts as a
    copy of an empty one (copy_empty_store).
    """
    from dlrun.errors import DlrunError

    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if "://" in uri or uri.startswith("sqlite:") else "file"
    if scheme not in SCHEMES:
        raise DlrunError(f"tracking.uri '{uri}': unknown store scheme '{scheme}'",
                         f"use one of {', '.join(s + '://' for s in SCHEMES)} (or drop it for ./mlflow.db)")
    check_reachable(uri)
    db = sqlite_path(uri)
    if db is None:
        return
    folder = db.resolve().parent
    if not folder.is_dir():
        raise DlrunError(f"tracking store folder '{folder}' does not exist", "create it or set tracking.uri")
    if db.exists():
        with open(db, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
        if head and head != SQLITE_MAGIC:
            raise DlrunError(f"'{db}' is not an SQLite database (MLflow store)",
                             "move it away, or set tracking.uri=sqlite:///other.db; dlrun never overwrites it")
        if not os.access(db, os.W_OK) or not os.access(folder, os.W_OK):
            raise DlrunError(f"tracking store '{db}' is not writable",
                             "run from a writable folder or set tracking.uri=sqlite:////writable/path/mlflow.db")
    elif not os.access(folder, os.W_OK):
        raise DlrunError(f"cannot create the tracking store '{db}': folder '{folder}' is not writable",
                         "run from a writable folder or set tracking.uri=sqlite:////writable/path/mlflow.db")
    import fcntl

    from mlflow.tracking import MlflowClient

    # A lock beside the store serialises its creation and migration (a process that sees the
    # file half-made would migrate it too); the second process waits, then finds the tables
    # there. MLflow caches the store per URI, so the later calls reuse it.
    with open(folder / f".{db.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not db.exists() and db.name != ":memory:" and "mode=memory" not in uri:
            copy_empty_store(db)
        with store_errors(uri):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def copy_empty_store(db: Path) -> None:
    """Start a new SQLite store as a copy of an empty store that MLflow built once (in the
    user's cache folder), instead of MLflow's ~60 schema migrations, each committed to disk:
    about a second of every first run in a new folder. MLflow then checks the copy's schema
    version and adds the folder's Default experiment as for any new store.

    The empty store is named by the MLflow version and its newest schema revision, so another
    MLflow (or a development copy with other migrations) builds its own; it is built under a
    unique temporary name and renamed into place whole, as is the copy beside `db` (the caller
    holds the store's lock), so two first runs at once, in one folder or two, each find whole
    files. A copy whose schema revision is not MLflow's newest is removed again. Anything going
    wrong here (no home, a read-only or full cache, MLflow internals renamed) leaves the store
    to MLflow, as before."""
    import secrets
    import shutil
    import sqlite3

    parts: list[Path] = []  # files being written: each is renamed into place whole, or removed
    try:
        import mlflow
        import sqlalchemy
        from mlflow.store.db.utils import _get_latest_schema_revision, _initialize_tables  # what MLflow runs

        head = _get_latest_schema_revision()
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlrun"
        template = cache / f"mlflow-{mlflow.__version__}-{head}-empty.db"
        unique = f"{os.getpid()}.{secrets.token_hex(4)}"  # one home shared by several hosts: pids repeat
        if not template.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            parts.append(cache / f".{template.name}.{unique}")
            engine = sqlalchemy.create_engine(f"sqlite:///{parts[-1]}")
            try:
                _initialize_tables(engine)
            finally:
                engine.dispose()
            os.replace(parts[-1], template)
        parts.append(db.with_name(f".{db.name}.{unique}"))
        shutil.copyfile(template, parts[-1])
        with contextlib.closing(sqlite3.connect(parts[-1])) as copy:
            (version,) = copy.execute("SELECT version_num FROM alembic_version").fetchone()
        if version != head:
            raise ValueError(f"{template} has schema {version}, not {head}")
        os.replace(parts[-1], db)
    except Exception:
        for part in parts:
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)


@contextlib.contextmanager
def store_errors(uri: str):
    """MLflow and database errors of the store as one line naming the store."""
    from dlrun.errors import DlrunError

    try:
        yield
    except DlrunError:
        raise
    except Exception as e:
        kind = type(e).__name__
        if kind not in ("MlflowException", "OperationalError", "DatabaseError", "IntegrityError",
                        "RestException", "ProgrammingError"):
            raise
        lines = [ln.strip() for ln in str(getattr(e, "message", e)).splitlines() if ln.strip()]
        first = lines[0] if lines else kind
        if first.startswith("(sqlite3."):
            first = first.split(")", 1)[-1].strip()
        hint = None
        if "deleted experiment" in first:  # MLflow's text says to restore or purge it, not how
            first = first.split(". ", 1)[0] + " (it is in the store's trash)"
            hint = ("log to another one: tracking.experiment=<name>, or restore it: mlflow experiments restore "
                    "--experiment-id <id>")
        raise DlrunError(f"tracking store {uri}: {first[:300]}", hint) from None


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
        import warnings

        try:
            with warnings.catch_warnings():  # a local file matches two of MLflow's own resolvers
                warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
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


@contextlib.contextmanager
def tracked_run(tracker: Tracker):
    """End the active run FINISHED, FAILED (with reason) or KILLED (Ctrl-C, SIGTERM)."""
    from dlrun.errors import DlrunError, Interrupted

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


def log_to_existing_run(tracking_cfg, run_id: str, metrics: dict, tables: dict | None = None,
                        record=None, prefix: str = "eval", files: dict | None = None) -> None:
    """Add metrics, tables, files (under `prefix/`) and an evaluation dataset to a run without
    touching its status (dlrun eval)."""
    from mlflow.entities import DatasetInput, InputTag, Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_cfg.uri or None)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i:i + 500])
    for name, rows in (tables or {}).items():
        client.log_text(run_id, json.dumps(rows, indent=1, default=str), f"tables/{prefix}/{name}.json")
    for name, path in (files or {}).items():
        client.log_artifact(run_id, str(path), str(Path(prefix) / Path(name).parent))
    if record is not None:
        with contextlib.suppress(Exception), no_integer_schema_warning():  # a record must never fail an eval
            ds = mlflow_dataset(record)
            if ds is not None:
                tag = InputTag("mlflow.data.context", record.context)
                client.log_inputs(run_id, datasets=[DatasetInput(ds._to_mlflow_entity(), tags=[tag])])
