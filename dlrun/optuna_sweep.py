"""Optuna searches: `dlrun train -m hparams_search=optuna` (the sweeper in hydra_plugins/dlrun_optuna).

Each worker process loops: ask the study for a trial (under a file lock, so the count of trials
never overshoots `n_trials`), run it through Hydra's launcher as one job whose number is the
trial number, tell the study the job's value. So

- the study lives in an RDB storage (SQLite next to the sweep by default, `load_if_exists`): the
  same command resumes it. Finished trials (complete, pruned, failed) count toward `n_trials`;
  job numbers and folders are trial numbers, so they continue and nothing is overwritten. A trial
  whose process died (Ctrl-C, SIGKILL, a crashed machine: no heartbeat) is failed as interrupted,
  does not count, and its parameters are tried again first.
- `n_jobs: N` starts N-1 more processes running the same command on the same study: each takes a
  new trial as soon as its last one ends (no batches), with any launcher, the basic one included.
  More workers elsewhere: the same command with a shared `storage` (PostgreSQL, MySQL) and
  `hydra.sweeper.worker=1,2,...`.
- a trial that fails (an exception, a DlrunError such as a NaN loss or a bad value) is FAILED in
  the study with its reason (user attribute `error`) and the study goes on.
- the value is what `dlrun train` returns: the task's objective on validation data at the
  evaluated weights (runner.sweep_value); the direction is the objective's (`direction: auto`).
  `metric: val_loss` (any per-epoch key) optimises that key's best epoch instead.
- with a `pruner`, Keras-fit tasks report the metric every epoch (`TrialExtension`, attached to the
  job as a run extension) and a pruned trial stops training, is logged as usual and is PRUNED
  in the study. The report needs the job in this process: the basic launcher (the default).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrun.contract import maximized
from dlrun.errors import DlrunError
from dlrun.optuna_study import counted, fail_vanished, file_lock, heartbeat, open_storage, quiet_optuna
from dlrun.overrides import parse_override
from dlrun.training.extensions import Extension

WORKER_ENV = "DLRUN_SWEEP_WORKER"  # set in the extra worker processes (sweep.py leaves the summary to the first)


@dataclass
class TrialExtension(Extension):
    """The Optuna trial of the job this process runs, attached to it as a run extension
    (training/extensions.py): its callbacks report the metric each epoch, prune when the pruner
    says so and tag the run with the study and trial; the sweeper reads back what happened."""

    trial: Any
    metric: str | None  # None: the task's objective (val_<name>)
    prune: bool
    history: list = field(default_factory=list)
    pruned_at: int | None = None
    run_id: str | None = None

    def callbacks(self, ctx) -> list:
        import keras

        tracker = ctx.tracker
        self.run_id = tracker.run_id
        self.metric = self.metric or ctx.objective.val
        trial, current = self.trial, self
        tracker.set_tags({"dlrun.optuna.study": trial.study.study_name, "dlrun.optuna.trial": str(trial.number)})

        class Report(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                value = (logs or {}).get(current.metric)
                if value is None or not math.isfinite(float(value)):
                    return
                current.history.append(float(value))
                trial.report(float(value), epoch + 1)
                if current.prune and trial.should_prune():
                    current.pruned_at = epoch + 1
                    tracker.set_tags({"dlrun.optuna.pruned": f"epoch {epoch + 1}"})
                    self.model.stop_training = True  # the run ends normally (logged, FINISHED); the trial PRUNED

        return [Report()]


# -- search space -------------------------------------------------------------------------------
def distribution(key: str, value: Any):
    """A Hydra sweep expression (choice, range, interval, tag(log, ...), int(interval(...))) or a
    YAML list as an Optuna distribution; None for a plain value."""
    if isinstance(value, list | tuple):
        value = "choice(" + ",".join(_encode(v) for v in value) + ")"
    override = parse_override(f"{key}={value}")
    if override is None:
        raise DlrunError(f"hparams_search: cannot parse '{key}: {value}'",
                         "write a Hydra sweep: choice(a,b), range(a,b), interval(a,b), tag(log, interval(a,b))")
    return override_distribution(override)


def override_distribution(override):
    """A parsed Hydra override's sweep as an Optuna distribution; None for a plain value."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    sweep = override.value()
    if isinstance(sweep, ChoiceSweep) or (isinstance(sweep, RangeSweep) and sweep.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(sweep, RangeSweep):
        return IntDistribution(int(sweep.start), int(sweep.stop) - 1, step=int(sweep.step))  # range() excludes stop
    if isinstance(sweep, IntervalSweep):
        log = "log" in sweep.tags
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    raise DlrunError(f"hparams_search: '{override.input_line}' is not a search space",
                     "use choice(a,b), range(a,b), interval(a,b), int(interval(a,b)), tag(log, interval(a,b))")


def _encode(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return str(value)


def search_space(params, arguments: list[str]) -> tuple[dict, list[str]]:
    """The distributions from the config's params and the command line's sweep overrides, and the
    command line's plain overrides (every job gets them)."""
    space = {str(k): d for k, v in (params or {}).items() if (d := distribution(str(k), _plain(v))) is not None}
    fixed = []
    for arg in arguments:
        o = parse_override(arg)  # None: not Hydra syntax, which composing the first job reports
        d = None if o is None or o.key_or_group.startswith("hydra.") else override_distribution(o)
        if d is None:
            fixed.append(arg)
            if o is not None:
                space.pop(o.key_or_group, None)  # a plain value on the command line wins over the search
        else:
            space[o.get_key_element()] = d
    if not space:
        raise DlrunError("hparams_search: the search space is empty",
                         "set hydra.sweeper.params in the hparams_search YAML, or key=interval(a,b) on the command line")
    return space, fixed


def _plain(value):
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value


def overrides_for(params: dict, fixed: list[str]) -> list[str]:
    return [*fixed, *(f"{k}={_encode(v) if isinstance(v, list | tuple) else v}" for k, v in params.items())]


# -- the study ---------------------------------------------------------------------------------
def resolve_direction(settings, existing, probe) -> str:
    direction = str(settings["direction"])
    if direction not in ("auto", "maximize", "minimize"):
        raise DlrunError(f"hparams_search: direction '{direction}' is not auto, maximize or minimize")
    if existing is not None:
        have = existing.direction.name.lower()
        if direction not in ("auto", have):
            raise DlrunError(f"hparams_search: study '{existing.study_name}' exists and {have}s",
                             "keep its direction, or start another one with hydra.sweeper.study_name=NEW")
        return have
    if direction != "auto":
        return direction
    metric = settings["metric"]
    if metric and metric != "auto":
        up = maximized(str(metric))
        if up is None:
            raise DlrunError(f"hparams_search: cannot tell whether to minimise or maximise metric '{metric}'",
                             "set hydra.sweeper.direction=minimize or hydra.sweeper.direction=maximize")
        return "maximize" if up else "minimize"
    return "maximize" if probe().maximize else "minimize"


def probe_objective(sweeper, fixed: list[str]):
    """The task's objective (its direction) for this sweep, from the first job's config as the
    task declares it: no data set is loaded, no strategy or TensorFlow started (tasks.base.Task.objective)."""
    from omegaconf import open_dict, read_write

    from dlrun.registry import TASKS

    cfg = sweeper.hydra_context.config_loader.load_sweep_config(sweeper.config, list(fixed))
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return TASKS.get(cfg.task.name)().objective(cfg, None)


def make(spec, worker: int, n_before: int):
    """The sampler or pruner from its config; a seeded sampler gets a different seed per worker
    and per restart (the same seed again would repeat the random start-up trials)."""
    if spec is None:
        return None
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    spec = OmegaConf.create(_plain(spec))
    extra = {}
    if spec.get("seed") is not None:
        extra["seed"] = int(spec.seed) + 1000 * worker + n_before
    try:
        return instantiate(spec, **extra)
    except Exception as e:
        raise DlrunError(f"hparams_search: cannot build {spec.get('_target_')}", str(e).splitlines()[-1]) from None


# -- the sweep ---------------------------------------------------------------------------------
def sweep(sweeper, arguments: list[str]) -> list:
    from dlrun import console

    try:
        return _sweep(sweeper, arguments)
    except DlrunError as e:  # Hydra would print a traceback: one line, exit 2, like the rest of dlrun
        console.error(e.message, e.hint)
        _fail_parent(sweeper.config)
        sys.stdout.flush()
        sys.exit(2)


def _sweep(sweeper, arguments: list[str]) -> list:
    import optuna

    from dlrun import console

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # dlrun prints one line per trial
    s, config = sweeper.settings, sweeper.config
    worker, n_trials = int(s["worker"]), int(s["n_trials"])
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    space, fixed = search_space(s["params"], arguments)
    url = s["storage"] or f"sqlite:///{sweep_dir / 'optuna.db'}"
    storage = open_storage(url, int(s["heartbeat_interval"]))
    name = str(s["study_name"])
    with file_lock(sweep_dir / ".optuna.lock"):  # first use: one process creates the study
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            existing = None
        direction = resolve_direction(s, existing, lambda: probe_objective(sweeper, fixed))
        n_before = len(existing.trials) if existing is not None else 0
        study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True,
                                    sampler=make(s["sampler"], worker, n_before), pruner=make(s["pruner"], worker, 0))
        fail_vanished(study, storage)
        if worker == 0:
            for line in s["enqueue"] or []:
                study.enqueue_trial(_enqueued(str(line), space), skip_if_exists=True)
    metric = None if s["metric"] in (None, "auto") else str(s["metric"])
    done = counted(study)
    if worker == 0:
        console.console.print(f"optuna study [cyan]{name}[/] ({direction}) in {url}: {done} of {n_trials} trials "
                              f"done" + (f", {int(s['n_jobs'])} workers" if int(s["n_jobs"]) > 1 else ""))
    workers = _start_workers(config, sweep_dir, int(s["n_jobs"])) if worker == 0 and done < n_trials else []
    results = []
    try:
        while True:
            with file_lock(sweep_dir / ".optuna.lock"):
                if counted(study) >= n_trials:
                    break
                with quiet_optuna():
                    trial = study.ask(fixed_distributions=space)
                trial.set_user_attr("host", socket.gethostname())
                trial.set_user_attr("pid", os.getpid())
            results.append(_run_trial(sweeper, study, storage, trial, fixed, metric, s))
    finally:
        for proc in workers:
            proc.wait()
    if worker == 0:
        _report(study, sweep_dir)
    return results


def _enqueued(line: str, space: dict) -> dict:
    """`key=value key=value` as trial parameters (keys of the search space only)."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution

    params = {}
    for o in OverridesParser.create().parse_overrides(shlex.split(line)):
        key = o.get_key_element()
        d = space.get(key)
        if d is None:
            raise DlrunError(f"hparams_search: enqueued '{key}' is not in the search space", f"searched: {', '.join(space)}")
        value = o.value()
        if isinstance(d, CategoricalDistribution):
            text = _encode(value) if isinstance(value, list) else str(value)
            match = [c for c in d.choices if c == value or str(c) == text]
            if not match:
                raise DlrunError(f"hparams_search: enqueued {key}={text} is not one of {list(d.choices)}")
            value = match[0]
        params[key] = value
    return params


def _run_trial(sweeper, study, storage, trial, fixed, metric, s) -> Any:
    """One job for one trial; the study is told its value, PRUNED or FAILED with the reason."""
    import optuna

    from dlrun import console
    from dlrun.sweep import JobFailed
    from dlrun.training import extensions

    S = optuna.trial.TrialState
    overrides = overrides_for(trial.params, fixed)
    current = TrialExtension(trial, metric, prune=s["pruner"] is not None)
    value, error = None, None
    try:
        with heartbeat(storage, study, trial, int(s["heartbeat_interval"])), extensions.attached(current):
            ret = sweeper.launcher.launch([overrides], initial_job_idx=trial.number)[0]
        try:
            result = ret.return_value  # a job that raised: Hydra raises its exception here
        except Exception as e:
            result = JobFailed(f"{type(e).__name__}: {e}".splitlines()[0])
        if isinstance(result, JobFailed):  # cli.job's answer for a DlrunError (a bad value, a NaN loss)
            error = result.reason
        elif result is None:
            error = "the job failed (its MLflow run has the reason)"
        elif metric:
            pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
            value = pick(current.history) if current.history else None
            error = None if value is not None else f"no per-epoch '{metric}' in the job's history"
        else:
            value = float(result)
        if value is not None and not math.isfinite(value):
            value, error = None, f"value {value}"
        if current.run_id:
            trial.set_user_attr("mlflow_run_id", current.run_id)
        trial.set_user_attr("overrides", " ".join(overrides))
    except Exception as e:  # never leave a trial RUNNING because recording went wrong
        error = f"{type(e).__name__}: {e}".splitlines()[0]
    if error is not None:
        trial.set_user_attr("error", error[:2000])
        study.tell(trial, state=S.FAIL)
        console.warn(f"trial {trial.number} failed: {error}")
        return None
    if current.pruned_at is not None:
        study.tell(trial, state=S.PRUNED)
        console.console.print(f"trial {trial.number} pruned at epoch {current.pruned_at}")
        return value
    study.tell(trial, value)
    best = study.best_trial
    console.console.print(f"trial {trial.number}: {value:.6g} (best {best.value:.6g}, trial {best.number})")
    return value


def _report(study, sweep_dir: Path) -> None:
    """Best trial on the console and in <sweep dir>/optimization_results.yaml."""
    import optuna
    from omegaconf import OmegaConf

    from dlrun import console

    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in (S.COMPLETE, S.PRUNED, S.FAIL)}
    result = {"study": study.study_name, "direction": study.direction.name.lower(), "trials": counts}
    if counts["complete"]:
        best = study.best_trial
        result.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                      best_run_id=best.user_attrs.get("mlflow_run_id"))
        console.console.print(f"best trial {best.number}: {best.value:.6g} with "
                              + " ".join(f"{k}={v}" for k, v in best.params.items()))
    OmegaConf.save(OmegaConf.create(result), sweep_dir / "optimization_results.yaml")


def _start_workers(config, sweep_dir: Path, n_jobs: int) -> list:
    """n_jobs-1 more processes running this command on the same study and sweep folder (their
    output in <sweep dir>/worker-N.log); they end with this one on Linux (parent-death signal)."""
    skip = ("hydra.sweep.dir=", "hydra.sweeper.worker=", "hydra.sweeper.n_jobs=")
    args = [*config.hydra.overrides.task, *(o for o in config.hydra.overrides.hydra if not o.startswith(skip))]
    procs = []
    for k in range(1, n_jobs):
        cmd = [sys.executable, "-m", "dlrun", "train", "-m", *args, f"hydra.sweep.dir={sweep_dir}",
               f"hydra.sweeper.worker={k}"]
        log = open(sweep_dir / f"worker-{k}.log", "a")  # noqa: SIM115 -- handed to the child, closed with it
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, WORKER_ENV: str(k)},
                                      preexec_fn=_die_with_parent if sys.platform == "linux" else None))
        log.close()
    return procs


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _fail_parent(config) -> None:
    """A sweep that stopped before its trials: its MLflow parent run ends FAILED, not RUNNING."""
    if config is None or os.environ.get(WORKER_ENV):
        return
    with contextlib.suppress(Exception):
        from mlflow.tracking import MlflowClient

        from dlrun.sweep import parent_of

        parent = parent_of(config.hydra.sweep.dir)
        if parent:
            MlflowClient(tracking_uri=config.tracking.get("uri") or None).set_terminated(parent, "FAILED")
