"""One run, from a composed config to a logged result: `train` and `evaluate`.

    seed, precision, strategy -> tracking run -> task.data -> (strategy scope) task.build_model
    -> task.fit (callbacks: checkpoint, early stop, progress, MLflow) -> task.evaluate -> log

Tasks return data, models, histories and Reports; this module and tracking/console present them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from dlrun import console
from dlrun.config import validate
from dlrun.errors import DlrunError
from dlrun.registry import DATA, MODELS, TASKS
from dlrun.tracking import Tracker, log_to_existing_run, tracked_run

# Keys of an eval override that select where to read from, not what to rebuild.
_EVAL_ONLY = ("run_id", "checkpoint", "tracking")


def _quiet_tensorflow() -> None:
    """Import TensorFlow without its C++ start-up chatter on stderr (oneDNN, CUDA probing).

    TF 2.21 prints those lines before its log level applies, so stderr is pointed at
    /dev/null for the import and the first device query only; TF_CPP_MIN_LOG_LEVEL=0 set by
    the user keeps everything.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)


def _prepare(cfg):
    """Validate, resolve names, set seed/precision/determinism and build the strategy."""
    cfg = validate(cfg)
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise DlrunError(f"{missing[0]}: a required value is missing", f"add {missing[0]}=... to the command")
    task_name = TASKS.canonical(cfg.task.name)
    MODELS.canonical(cfg.model.name)
    if cfg.get("data") is not None and cfg.data.get("name"):
        DATA.canonical(cfg.data.name)
    _quiet_tensorflow()
    from dlrun.strategy import make_strategy, set_precision

    strategy = make_strategy(cfg.strategy)  # first: logical devices must precede TF runtime init
    import keras
    import tensorflow as tf

    keras.backend.clear_session()  # a sweep runs its jobs in one process: start each one clean
    keras.utils.set_random_seed(int(cfg.trainer.seed))
    if cfg.trainer.deterministic:
        tf.config.experimental.enable_op_determinism()
    set_precision(cfg.trainer.precision)
    return cfg, task_name, strategy


def _data(task, cfg, strategy):
    """Build the task's data for the strategy's global batch and apply smoke limits."""
    from dlrun.data.pipeline import limit

    replicas = int(strategy.num_replicas_in_sync)
    global_batch = int(cfg.trainer.batch_size) * replicas
    data = task.data(cfg, global_batch)
    n = cfg.trainer.limit_batches
    if n:
        data.train, data.val, data.test = limit(data.train, n), limit(data.val, n), limit(data.test, n)
    steps = _cardinality(data.train)
    if steps:
        data.info.extra["steps_per_epoch"] = steps
    return data, global_batch, replicas


def _cardinality(ds) -> int | None:
    try:
        n = int(ds.cardinality())
    except (AttributeError, TypeError):
        return None
    return n if n > 0 else None


def train(cfg, overrides: list[str], workdir: Path) -> float | None:
    """Train, evaluate and log one run. Returns the task's primary metric (for sweeps)."""
    cfg, task_name, strategy = _prepare(cfg)
    from dlrun.strategy import describe
    from dlrun.training.callbacks import epoch_end, tensorboard, trainer_callbacks

    tracker = Tracker(cfg.tracking)
    with tracked_run(tracker):
        tracker.start(cfg, task_name, cfg.model.name, overrides)
        facts = describe(strategy)
        task = TASKS.get(task_name)()
        data, global_batch, replicas = _data(task, cfg, strategy)
        tracker.log_params({"strategy.replicas": replicas, "trainer.global_batch_size": global_batch})
        tracker.set_tags({"dlrun.strategy": facts["strategy"], "dlrun.devices": facts["devices"],
                          "dlrun.gpus": facts["gpus"], **_versions()})
        console.header("train", task_name, cfg.model.name, data.info.name,
                       {"strategy": facts["strategy"], "replicas": replicas, "batch": global_batch}, tracker.run_id)
        tracker.log_dataset(data)
        with strategy.scope():
            model = task.build_model(cfg, data.info)
        if model is not None and hasattr(model, "count_params"):
            console.model_summary(model)
            tracker.log_params({"model.params": model.count_params()})

        progress = console.EpochProgress(int(cfg.trainer.epochs), enabled=bool(cfg.trainer.progress))
        callbacks = trainer_callbacks(cfg.trainer, workdir, has_val=data.val is not None)

        def on_epoch(epoch, logs):
            progress(epoch, logs)
            tracker.log_epoch(epoch, logs)

        callbacks.append(epoch_end(on_epoch))
        if cfg.tracking.tensorboard:
            callbacks.append(tensorboard(workdir / "tensorboard"))
        start = time.perf_counter()
        try:
            with stop_on_ctrl_c(model):
                history = task.fit(cfg, model, data, callbacks)
            fit_seconds = time.perf_counter() - start  # training only; the flush below is per run
        finally:
            progress.close()
            tracker.flush_epochs()
        epochs_run = len(next(iter(history.values()), []))
        timing = {"timing/fit_seconds": fit_seconds, "timing/epochs": epochs_run}
        n_train = data.info.sizes.get("train")
        steps = data.info.extra.get("steps_per_epoch")
        if steps and epochs_run:
            seen = min(n_train or steps * global_batch, steps * global_batch)
            timing["timing/samples_per_second"] = seen * epochs_run / fit_seconds
        tracker.log_metrics(timing)

        report = task.evaluate(cfg, model, data)
        console.report(report, title=f"{task_name} results")
        try:
            tracker.log_report(report)
            if history and cfg.tracking.log_plots and tracker.enabled:
                from dlrun.plots import learning_curves

                report.figures["learning_curves.png"] = learning_curves(history)
                tracker.log_figures({"learning_curves.png": report.figures["learning_curves.png"]})
        finally:
            from dlrun.plots import close

            close(report.figures)  # also when nothing was logged: sweeps would pile them up
        tracker.log_path(workdir / "best.keras", "checkpoints")
        tracker.log_path(workdir / "tensorboard", "tensorboard")
        tracker.log_model(model, data)
        console.console.print(f"[green]done[/] in {fit_seconds:.1f}s training"
                              + (f"; mlflow run {tracker.run_id}" if tracker.run_id else ""))
        return sweep_value(history, report)


@contextlib.contextmanager
def stop_on_ctrl_c(model):
    """First Ctrl-C: ask Keras to stop after the current step (model.stop_training), then raise
    KeyboardInterrupt here, outside TensorFlow, so the run ends KILLED cleanly. A second
    Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread() or model is None:
        yield
        return
    pressed = []

    def handler(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(True)
        model.stop_training = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def sweep_value(history: dict, report) -> float | None:
    """What `train` hands a Hydra sweeper: the validation value of the task's primary metric
    (last epoch), so a search never selects on the test split. Test value only without
    validation data."""
    if not report.primary:
        return None
    name = report.primary.split("/", 1)[-1]
    val = history.get(f"val_{name}") if history else None
    return float(val[-1]) if val else report.metrics.get(report.primary)


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {"tensorflow.version": tf.__version__, "keras.version": keras.__version__}


def evaluate(cfg, overrides: list[str]) -> dict:
    """`dlrun eval`: rebuild the test split, load a model (MLflow run or .keras file), report."""
    _quiet_tensorflow()
    run_id, checkpoint = cfg.get("run_id"), cfg.get("checkpoint")
    if not run_id and not checkpoint:
        raise DlrunError("eval needs a model", "run_id=<mlflow run id> or checkpoint=<path.keras>")
    with tempfile.TemporaryDirectory(prefix="dlrun-eval-") as tmp:  # the downloaded run
        return _evaluate(cfg, overrides, run_id, checkpoint, Path(tmp))


def _evaluate(cfg, overrides, run_id, checkpoint, tmp: Path) -> dict:
    from omegaconf import OmegaConf

    if run_id:
        logged, model_path = _from_run(cfg, str(run_id), tmp)
        for item in overrides:
            key = item.lstrip("+~").split("=", 1)[0]
            if key.split(".")[0] in _EVAL_ONLY or key.startswith("hydra"):
                continue
            OmegaConf.update(logged, key, OmegaConf.select(cfg, key), force_add=True)
        logged.tracking = cfg.tracking
        cfg = logged
    else:
        model_path = Path(str(checkpoint))
        if not model_path.is_file():
            raise DlrunError(f"checkpoint '{checkpoint}' does not exist")
    cfg, task_name, strategy = _prepare(cfg)
    import keras

    task = TASKS.get(task_name)()
    data, global_batch, _ = _data(task, cfg, strategy)
    console.header("eval", task_name, cfg.model.name, data.info.name, {"model": model_path.name}, run_id)
    try:
        with strategy.scope():
            model = keras.saving.load_model(model_path)
    except (ValueError, OSError) as e:
        raise DlrunError(f"cannot load model '{model_path}': {str(e).splitlines()[0]}") from None
    report = task.evaluate(cfg, model, data)
    console.report(report, title=f"{task_name} eval")
    if run_id and cfg.tracking.enabled:
        test = {k: v for k, v in report.metrics.items() if k.startswith("test/")}
        log_to_existing_run(cfg.tracking, str(run_id), test, report.tables)
        console.console.print(f"[green]logged[/] {len(test)} test metrics to run {run_id}")
    return report.metrics


def _from_run(cfg, run_id: str, tmp: Path):
    """The logged config and the downloaded native model of an MLflow run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from dlrun.tracking import check_reachable, quiet_mlflow_logs

    quiet_mlflow_logs()
    client = MlflowClient(tracking_uri=cfg.tracking.uri or None)
    check_reachable(client.tracking_uri)
    try:
        client.get_run(run_id)
        config_file = client.download_artifacts(run_id, "config.yaml", str(tmp))
        model_file = client.download_artifacts(run_id, "native/model.keras", str(tmp))
    except MlflowException as e:
        raise DlrunError(f"run '{run_id}': {str(e.message).splitlines()[0]}",
                         "check run_id and tracking.uri / MLFLOW_TRACKING_URI") from None
    except OSError as e:
        raise DlrunError(f"run '{run_id}' has no logged config or model: {e}") from None
    logged = OmegaConf.load(config_file)
    OmegaConf.set_struct(logged, False)
    return logged, Path(model_file)
