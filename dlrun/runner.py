"""One training run, from a composed config to a logged result.

    seed, precision, strategy -> tracking run (chief only) -> task.data -> dataset records
    -> task.objective -> (strategy scope) task.build_model -> task.fit(run handle)
    -> best weights back in (trainer.checkpoint.evaluate) -> task.serving -> task.evaluate
    -> log the report, the served model and the checkpoint; print

Tasks return data, fits, served models and Reports; this module, tracking and console present
them. `dlrun eval` and `dlrun predict` live in inference.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from dlrun import console
from dlrun.config import validate
from dlrun.errors import DlrunError, Interrupted
from dlrun.registry import TASKS
from dlrun.startup import paused_gc
from dlrun.tracking import Tracker, tracked_run
from dlrun.training import extensions
from dlrun.training.signals import stop_signals


def quiet_tensorflow() -> None:
    """Import TensorFlow without its C++ start-up chatter on stderr (oneDNN, CUDA probing).

    TF 2.21 prints those lines before its log level applies, so stderr is pointed at
    /dev/null for the import and the first device query only; TF_CPP_MIN_LOG_LEVEL=0 set by
    the user keeps everything. The import runs with the garbage collector paused (startup.py).
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull, paused_gc():
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    import logging

    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    # "N out of the last N calls ... triggered tf.function retracing": each sweep job in one
    # process builds a new model, which is retracing by design, not a problem to report
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def prepare(cfg):
    """Validate, resolve names, set seed/precision/determinism and build the strategy."""
    cfg = validate(cfg)
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise DlrunError(f"{missing[0]}: a required value is missing", f"add {missing[0]}=... to the command")
    task_name = TASKS.canonical(cfg.task.name)  # model, data and agent names: checked by validate
    quiet_tensorflow()
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


def build_data(task, cfg, strategy):
    """The task's data for the strategy's global batch, with tf.data splits capped by
    trainer.limit_batches (other kinds of split, such as environments, are the task's)."""
    replicas = int(strategy.num_replicas_in_sync)
    global_batch = int(cfg.trainer.batch_size) * replicas
    data = task.data(cfg, global_batch)
    n = cfg.trainer.limit_batches
    if n:
        data.train, data.val, data.test = (_limit(d, n) for d in (data.train, data.val, data.test))
    data.info.steps_per_epoch = _cardinality(data.train)
    return data, global_batch, replicas


def _limit(ds, n: int):
    import tensorflow as tf

    return ds.take(int(n)) if isinstance(ds, tf.data.Dataset) else ds


def _cardinality(ds) -> int | None:
    try:
        n = int(ds.cardinality())
    except (AttributeError, TypeError):
        return None
    return n if n > 0 else None


def is_chief(strategy) -> bool:
    """Whether this process logs and saves: always, except on the non-chief workers of a
    multi-worker run (the chief, or worker 0 when the cluster has no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if resolver is None or task_type in (None, "chief"):
        return True
    try:
        has_chief = "chief" in resolver.cluster_spec().as_dict()
    except Exception:
        has_chief = False
    return task_type == "worker" and int(resolver.task_id or 0) == 0 and not has_chief


def train(cfg, overrides: list[str], workdir: Path) -> float | None:
    """Train, evaluate and log one run. Returns the validation value of the task's objective
    at the evaluated weights (what a sweep optimises)."""
    cfg, task_name, strategy = prepare(cfg)
    task = TASKS.get(task_name)()
    task.check(cfg, strategy)
    if cfg.trainer.resume and not task.resumable:
        raise DlrunError(f"trainer.resume: task '{task_name}' cannot resume a stopped run",
                         "start the run again without trainer.resume")
    chief = is_chief(strategy)
    with contextlib.ExitStack() as stack:
        if not chief:  # workers run the same code into a folder that is thrown away
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dlrun-worker-")))
        resume = None
        from dlrun.strategy import worker_count

        if cfg.trainer.resume and worker_count(strategy) > 1:  # the backup is the chief's alone
            raise DlrunError("trainer.resume does not work with strategy=multi_worker",
                             "start the multi-worker run again without trainer.resume")
        if cfg.trainer.resume:  # the stopped run's folder, backup and MLflow run
            from dlrun.training import backup

            resume = backup.locate(cfg.trainer.resume, overrides)
            workdir = resume.run_dir
        kept = bool(cfg.trainer.backup) and chief  # the run's record and lock (training/backup.py)
        if kept:
            from dlrun.training import backup

            stack.enter_context(backup.hold(workdir))
        tracker = Tracker(cfg.tracking, enabled=chief)
        stop = stack.enter_context(stop_signals())
        stack.enter_context(tracked_run(tracker))
        tracker.start(cfg, task_name, cfg.model.name, overrides, resume_run_id=resume.run_id if resume else None,
                      resumed_at=resume.epochs_done if resume else None)
        tracker.set_tags({"dlrun.workdir": str(workdir.resolve())})
        if kept:
            backup.start(workdir, tracker.run_id, backup.own_overrides(overrides))
        return _train(cfg, overrides, workdir, task, task_name, strategy, tracker, stop, chief, resume)


def _train(cfg, overrides, workdir: Path, task, task_name: str, strategy, tracker, stop, chief: bool, resume=None):
    """The run's steps: data -> model -> fit -> serve -> evaluate -> log. What else takes part
    (TensorBoard, backup and resume, an Optuna trial) is an extension (training/extensions.py)."""
    ctx = extensions.RunContext(cfg, overrides, workdir, task, task_name, strategy, tracker, chief, resume)
    data, datasets = _data(ctx)
    ctx.objective = task.objective(cfg, data.info)
    _model(ctx, data)
    fit, fit_seconds = _fit(ctx, data, stop)
    served, evaluated = _serve(ctx, data, fit)
    report = task.evaluate(cfg, served, data)
    _log(ctx, data, datasets, fit, served, report)
    for ext in ctx.extensions:
        ext.finished(ctx)
    return _objective_value(ctx, fit, fit_seconds, evaluated)


def _data(ctx):
    """The task's data for the strategy's global batch; the facts of the run (strategy, devices,
    versions), the data's warnings and notes and its datasets logged, the header printed."""
    from dlrun.strategy import describe

    cfg, tracker = ctx.cfg, ctx.tracker
    facts = describe(ctx.strategy)
    data, global_batch, replicas = build_data(ctx.task, cfg, ctx.strategy)
    ctx.global_batch = global_batch
    tracker.log_params({"strategy.replicas": replicas, "strategy.workers": facts["workers"],
                        "trainer.global_batch_size": global_batch})
    tracker.set_tags({"dlrun.strategy": facts["strategy"], "dlrun.devices": facts["devices"],
                      "dlrun.gpus": facts["gpus"], **_versions()})
    console.header("train", ctx.task_name, cfg.model.name, data.info.name,
                   {"strategy": facts["strategy"], "replicas": replicas, "batch": global_batch}, tracker.run_id)
    for line in data.warnings:
        console.warn(line)
    if data.warnings:
        tracker.set_tags({"dlrun.warnings": " | ".join(data.warnings)[:5000]})
    for tag, text in data.notes.items():
        console.note(f"{tag.removeprefix('dlrun.')}: {text}")
    if data.notes:
        tracker.set_tags({tag: str(text)[:5000] for tag, text in data.notes.items()})
    datasets = tracker.log_datasets(data.records) if ctx.resume is None else {}
    return data, datasets


def _model(ctx, data) -> None:
    """The task's model in the strategy's scope, the run handle, and the callbacks of the run's
    extensions (which may restore the model: a resumed run)."""
    from dlrun.training.handle import Handle

    cfg, tracker = ctx.cfg, ctx.tracker
    with ctx.strategy.scope():
        ctx.model = ctx.task.build_model(cfg, data.info)
    if ctx.model is not None and hasattr(ctx.model, "count_params"):
        console.model_summary(ctx.model)
        tracker.log_params({"model.params": ctx.model.count_params()})
    ctx.run = Handle(cfg.trainer, ctx.workdir, ctx.objective, has_val=data.val is not None, is_chief=ctx.chief,
                     log=tracker.log_step, log_epoch=tracker.log_epoch, log_keras=tracker.log_keras,
                     progress=lambda total, unit: console.Progress(total, unit, enabled=bool(cfg.trainer.progress)))
    ctx.run.global_batch = ctx.global_batch
    ctx.extensions = extensions.for_run(ctx)
    for ext in ctx.extensions:
        ctx.run.callbacks += ext.callbacks(ctx)
    ctx.run.attach(ctx.model)


def _fit(ctx, data, stop):
    """task.fit under the run's signal handling; a stop keeps what exists and ends the run KILLED."""
    run, tracker = ctx.run, ctx.tracker
    start = time.perf_counter()
    try:
        with stop.during_fit(run):
            fit = ctx.task.fit(ctx.cfg, ctx.model, data, run)
        fit_seconds = time.perf_counter() - start  # training only; the flush below is per run
    finally:
        run.close()
        tracker.flush()
    if run.stop_reason:  # keep what exists: the best checkpoint so far, a backup to resume from
        for ext in ctx.extensions:
            ext.stopped(ctx)
        tracker.log_path(ctx.workdir / "best.keras", "checkpoints")
        raise Interrupted(run.stop_reason, stop.code)
    timing = {"timing/fit_seconds": fit_seconds}
    if fit.history:
        timing[f"timing/{fit.unit}s"] = len(next(iter(fit.history.values())))
    if fit.seen:
        timing["timing/samples_per_second" if fit.unit == "epoch" else "timing/steps_per_second"] = \
            fit.seen / max(fit_seconds, 1e-9)
    tracker.log_metrics(timing)
    return fit, fit_seconds


def _serve(ctx, data, fit):
    """The evaluated weights (the best kept, or the last) and the served model built on them."""
    from dlrun.strategy import evaluation_scope

    run, model = ctx.run, ctx.model
    evaluated = "last"
    if ctx.cfg.trainer.checkpoint.evaluate == "best" and run.best is not None and run.best.restore(model):
        evaluated = f"best ({run.best.monitor} {run.best.value:.6g} at {fit.unit} {run.best.step})"
    ctx.tracker.set_tags({"dlrun.evaluated_weights": evaluated})
    with evaluation_scope(ctx.strategy):
        served = ctx.task.serving(ctx.cfg, model, data)
    return served, evaluated


def _log(ctx, data, datasets, fit, served, report) -> None:
    """The report on the console; the served model, the report, the learning curves, the best
    checkpoint and the plots a task drew during fit to MLflow."""
    cfg, tracker, workdir = ctx.cfg, ctx.tracker, ctx.workdir
    console.report(report, title=f"{ctx.task_name} results")
    for line in report.warnings:
        console.warn(line)
    if report.warnings:
        tracker.set_tags({"dlrun.warnings": " | ".join([*data.warnings, *report.warnings])[:5000]})
    try:
        model_id = tracker.log_served(served, workdir / "served", ctx.task_name) if ctx.chief else None
        tracker.log_report(report, model_id=model_id, dataset=datasets.get("testing"))
        if fit.history and cfg.tracking.log_plots and tracker.enabled:
            from dlrun.plots import learning_curves

            unit = "step" if fit.steps else fit.unit  # custom loops log at their own steps
            report.figures["learning_curves.png"] = learning_curves(fit.history, unit, fit.steps)
            tracker.log_figures({"learning_curves.png": report.figures["learning_curves.png"]})
    finally:
        from dlrun.plots import close

        close(report.figures)  # also when nothing was logged: sweeps would pile them up
    tracker.log_path(workdir / "best.keras", "checkpoints")
    tracker.log_path(workdir / "plots", "plots")  # figures a task drew during fit (a GAN's sample grids)


def _objective_value(ctx, fit, fit_seconds: float, evaluated: str) -> float | None:
    """The objective on validation data at the evaluated weights: logged, and what a sweep gets."""
    objective, tracker = ctx.objective, ctx.tracker
    value = sweep_value(fit, objective)
    if value is None and _in_sweep():
        raise DlrunError(f"no validation value of {objective.name} to hand the sweep (no {objective.val} in the "
                         "training history)", "a search selects on validation data: give the task a validation split")
    tracker.set_tags({"dlrun.objective": objective.val, "dlrun.objective_maximize": str(objective.maximize).lower()})
    if value is not None:
        tracker.log_metrics({"objective/val": value})  # what a sweep compares (validation, evaluated weights)
    console.console.print(f"[green]done[/] in {fit_seconds:.1f}s training, evaluated on {evaluated.split(' (')[0]}"
                          f" weights" + (f"; mlflow run {tracker.run_id}" if tracker.run_id else ""))
    return value


def sweep_value(fit, objective) -> float | None:
    """What `train` hands a Hydra sweeper: the objective on validation data (`val_<name>` in
    the Keras-style history every task returns) at the evaluated weights (the best step when
    the checkpoint kept it, else the last value), so a search never selects on the test split.
    None when the run has no validation value (a sweep refuses that, see `train`)."""
    import math

    values = fit.history.get(objective.val) if fit.history else None
    if not values:
        return None
    steps = fit.steps or list(range(1, len(values) + 1))
    if fit.best_step in steps and fit.best_value is not None:
        value = values[steps.index(fit.best_step)]
        if math.isfinite(value):
            return float(value)
    finite = [v for v in values if math.isfinite(v)]  # a custom loop validates every few rows
    return float(finite[-1]) if finite else None


def _in_sweep() -> bool:
    """Whether this run is a job of a Hydra multirun (a sweep or an Optuna search)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {"tensorflow.version": tf.__version__, "keras.version": keras.__version__}
