"""The `dlrun` entry point: train, eval, predict, export, explain, attack, list, --help, --version.

train (and eval of a checkpoint file) hand their arguments to Hydra (overrides, -m/--multirun,
--cfg job, --info ...). eval/predict/export/explain/attack of a logged run (run_id= or
run_dir=) start from that run's config instead (inference.py, dlrun/explain/). Nothing here
imports TensorFlow or MLflow: --help and list answer at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dlrun import __version__
from dlrun.config_tree import GROUPS, config_dir, group_options
from dlrun.errors import DlrunError, Interrupted, did_you_mean
from dlrun.overrides import (
    first_job,
    override_value,
    parse_override,
    parse_overrides,
    sweep_choices,
    value_of,
)

COMMANDS = ("train", "eval", "predict", "export", "explain", "attack", "list")
FROM_RUN = ("predict", "export", "explain", "attack")  # commands that always start from a logged run

USAGE = f"""dlrun {__version__} — deep-learning experiment runner (TensorFlow/Keras 3, Hydra, MLflow)

usage:
  dlrun train [overrides...]       train, evaluate and log one run (default: the insurance MLP)
  dlrun eval  run_id=<id> [...]    re-evaluate a logged run on its test split, or data.path=<new file>
  dlrun eval  checkpoint=<f.keras> task=<task> [...]   evaluate a saved network without MLflow
  dlrun predict run_id=<id> input=<file|folder> [output=predictions.csv]   answers for raw inputs
              (run_dir=outputs/<date>/<time> instead of run_id for a run without MLflow)
  dlrun export run_id=<id> format=keras|savedmodel|tflite|onnx|tfjs [output=DIR] [quantize=dynamic]
  dlrun explain run_id=<id> method=gradcam|saliency|occlusion|activations|filters|top_images|tsne
              [input=<file|folder>] [output=explain] [layer=...]   what an image network looks at
  dlrun attack run_id=<id> method=fgsm,pgd eps=0.01,0.03,0.1 | method=fooling   accuracy under attack
              (eps in [0, 1] units of the raw pixel range: 0.03 = 7.65 grey levels of a 0-255 file)
  dlrun list  [group]              tasks, models, data sources, strategies, presets
  dlrun --version | --help

overrides (Hydra):
  task=cnn model=resnet data=csv data.path=f.csv data.target=y
  trainer.epochs=50 trainer.optimizer=sgd trainer.learning_rate=0.01 trainer=smoke
  strategy=mirrored strategy.cpu_replicas=2   experiment=insurance   tracking=off
  -m task=tabular model.hidden_units=[32],[64,64]   (sweep)   --cfg job   --info
  dlrun train --help shows Hydra's help with the config groups.

examples:
  dlrun train                               insurance risk MLP + baselines, logged to ./mlflow.db
  dlrun train task=cnn                      CNN on scikit-learn's digits
  dlrun train experiment=next_number        the course's RNN next-number exercise
  mlflow ui                                 browse the runs (same folder)
"""


def check_group_overrides(args: list[str]) -> None:
    """Unknown group options are a one-line error listing the valid ones (before Hydra/TF)."""
    for o in parse_overrides(args):
        key = o.key_or_group
        if key not in GROUPS or o.is_delete():
            continue
        options = sweep_choices(o) if o.is_sweep_override() else [override_value(o)]
        valid = group_options(key)
        for option in options or []:  # range, interval and glob sweeps are left to Hydra
            if option not in ("", None) and option not in valid:
                raise DlrunError(f"unknown {key} '{option}'", did_you_mean(option, valid))


def cmd_list(args: list[str]) -> int:
    """Print the registries and presets, one line each, without importing TensorFlow."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from dlrun.registry import AGENTS, DATA, MODELS, STRATEGIES, TASKS

    out = Console(highlight=False)
    groups = {"tasks", "task", "models", "model", "data", "agents", "agent", "envs", "env", "strategies", "strategy",
              "experiments", "experiment", "presets", "trainers", "trainer"}
    for arg in args:
        if arg not in groups:
            raise DlrunError(f"dlrun list: unknown group '{arg}'", did_you_mean(arg, groups))
    wanted = set(args) or {"tasks", "models", "data", "agents", "envs", "strategies", "experiments", "trainers"}

    def table(title, rows, extra=None):
        t = Table(title=title, show_edge=False, header_style="bold", title_justify="left")
        t.add_column("name", style="cyan")
        if extra:
            t.add_column(extra)
        t.add_column("description")
        for row in rows:
            t.add_row(*(escape(str(c)) for c in row))
        out.print(t)

    if wanted & {"tasks", "task"}:
        table("tasks (task=NAME)", [(e.name + (f" ({', '.join(e.aliases)})" if e.aliases else ""), e.description)
                                    for e in TASKS.entries()])
    if wanted & {"models", "model"}:
        table("models (model=NAME)", [(e.name, ", ".join(e.tags), e.description) for e in MODELS.entries()], "tasks")
    if wanted & {"data"}:
        table("data sources (data=NAME)", [(e.name, ", ".join(e.tags), e.description) for e in DATA.entries()],
              "tasks")
    if wanted & {"agents", "agent"}:
        table("RL agents (agent=NAME, task=rl)", [(e.name, e.tags[0], e.description) for e in AGENTS.entries()],
              "kind")
    if wanted & {"envs", "env"}:
        table("RL environments (env=NAME, task=rl; any gymnasium id with env.id=ID)",
              [(n, _yaml_value(config_dir() / "env" / f"{n}.yaml", "id"),
                _yaml_description(config_dir() / "env" / f"{n}.yaml")) for n in group_options("env")], "id")
    if wanted & {"strategies", "strategy"}:
        table("strategies (strategy=NAME)", [(e.name, e.description) for e in STRATEGIES.entries()])
    if wanted & {"experiments", "experiment", "presets"}:
        table("experiment presets (experiment=NAME)",
              [(n, _yaml_description(config_dir() / "experiment" / f"{n}.yaml")) for n in group_options("experiment")])
    if wanted & {"trainers", "trainer"}:
        table("trainer presets (trainer=NAME)",
              [(n, _yaml_description(config_dir() / "trainer" / f"{n}.yaml")) for n in group_options("trainer")])
    return 0


def _yaml_description(path: Path) -> str:
    """The first sentence of a YAML file's leading comment block (Hydra directives skipped)."""
    words = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.startswith("#"):
            break
        if "@package" not in line:
            words.append(line.lstrip("#").strip())
    text = " ".join(w for w in words if w)
    end = text.find(". ")
    return text[: end + 1] if end > 0 else text


def _yaml_value(path: Path, key: str) -> str:
    """One top-level value of a YAML file, as text ('' when absent)."""
    import yaml

    value = (yaml.safe_load(path.read_text()) or {}).get(key)
    return "" if value is None else str(value)


def check_composes(args: list[str]) -> None:
    """Compose the config once with the user's overrides so that a mistake (a misspelled key,
    bad override syntax) is one line, not Hydra's multi-line report. Sweeps (-m) and Hydra's
    own flags are left to Hydra."""
    if any(a in ("-m", "--multirun") for a in args):  # a sweep: check its first job's overrides
        args = [v for v in (first_job(a) for a in args if a not in ("-m", "--multirun")) if v]
    if any(a.startswith("-") for a in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from dlrun.config import register_resolvers

    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            try:
                compose("config", overrides=args)
                return  # the usual case: one compose (a misspelled key would have failed it)
            except (HydraException, OmegaConfBaseException) as e:
                failure = e
            parsed = [(a, parse_override(a)) for a in args]
            base = compose("config", overrides=[a for a, o in parsed if o is not None and "." not in o.key_or_group])
            for _, o in parsed:  # a misspelled key: name it and the closest real one
                if o is not None and "." in o.key_or_group and not (o.is_add() or o.is_delete()):
                    key = o.key_or_group
                    parent, leaf = key.rsplit(".", 1)
                    node = OmegaConf.select(base, parent)
                    # list the keys: OmegaConf says a ??? (missing) value is not "in" its node
                    known = [str(k) for k in node] if isinstance(node, DictConfig) else None
                    if known is not None and leaf not in known:
                        raise DlrunError(f"{key}: unknown key", did_you_mean(leaf, known))
            raise failure
    except (HydraException, OmegaConfBaseException) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        message = lines[0] if lines else type(e).__name__
        if getattr(e, "override", None):  # OverrideParseException: say which argument
            message = f"cannot parse '{e.override}': {message}"
            if not str(e.override).isascii():  # Hydra's grammar takes non-ASCII text only quoted
                hint = f"quote names with non-ASCII letters: {_quoted(str(e.override))}"
                raise DlrunError(message, hint) from None
        hint = next((ln for ln in lines[1:] if ln.lower().startswith(("did you mean", "key '"))), None)
        raise DlrunError(message, hint) from None


def check_writable(args: list[str]) -> None:
    """Hydra writes each run's folder under the working folder (unless hydra.run.dir or
    hydra.sweep.dir says otherwise): a read-only folder is one line here, not three tracebacks."""
    key = "hydra.sweep.dir" if any(a in ("-m", "--multirun") for a in args) else "hydra.run.dir"
    given = value_of(args, key)
    target = Path(given) if given else Path.cwd()
    while not target.exists() and target != target.parent:
        target = target.parent
    if not os.access(target, os.W_OK):
        raise DlrunError(f"folder '{target.resolve()}' is not writable (run folders and ./mlflow.db go there)",
                         f"run from a writable folder, or set {key}=/writable/path and "
                         "tracking.uri=sqlite:////writable/path/mlflow.db")


def _quoted(arg: str) -> str:
    """key=[größe,b] -> 'key=["größe",b]': the form Hydra parses, quoted for the shell."""
    import re

    key, _, value = arg.partition("=")
    value = re.sub(r"[^\[\],\s\"']*[^\x00-\x7f][^\[\],\"']*", lambda m: f'"{m.group(0).strip()}"', value)
    return f"'{key}={value}'"


def _flags_first(args: list[str]) -> list[str]:
    """-m/--multirun anywhere on the line (`dlrun train trainer=smoke -m lr=0.1,0.01`): Hydra's
    argument parser takes flags only before the overrides, so they move to the front."""
    flags = [a for a in args if a in ("-m", "--multirun")]
    return [*flags, *(a for a in args if a not in ("-m", "--multirun"))]


def _run_hydra(command: str, args: list[str]) -> int:
    """Compose with Hydra and run `command` for each job (one, or many with -m)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dlrun.config import register_schemas

    register_schemas()
    failures: list[str] = []
    from dlrun import sweep

    sweep.FAILED_JOBS = sweep.FAILED_BEFORE = 0  # this command's sweep (a process may run several commands)

    def job(cfg):
        from dlrun import console, runner

        hc = HydraConfig.get()
        overrides = list(hc.overrides.task)
        multirun = hc.mode == RunMode.MULTIRUN
        try:
            if command == "train":
                if multirun and not cfg.tracking.get("parent_run_id"):
                    from omegaconf import open_dict

                    from dlrun.sweep import parent_of

                    with open_dict(cfg):
                        cfg.tracking.parent_run_id = parent_of(hc.sweep.dir)
                return runner.train(cfg, overrides, Path(hc.runtime.output_dir))
            if not cfg.get("checkpoint"):
                raise DlrunError("eval needs a model", "run_id=<mlflow run id>, run_dir=<output folder> "
                                 "or checkpoint=<path.keras> task=<task>")
            from dlrun import inference

            inference.evaluate_checkpoint(cfg)
            return None
        except DlrunError as e:
            console.error(e.message, e.hint)
            if not multirun:
                sys.exit(2)
            failures.append(e.message)
            if command == "train" and getattr(e, "run_id", None) is None:  # rejected before its run began
                from dlrun.sweep import record_failure

                record_failure(cfg, overrides, str(e), hc.sweep.dir)
            return sweep.JobFailed(e.message, getattr(e, "run_id", None))
        except (KeyboardInterrupt, Interrupted) as e:
            _leave(e)

    plugins_visible()
    check_composes(args)
    if command == "train":  # a multi-worker run's non-chief workers write only to a temporary folder
        from dlrun.strategy import worker_run_dir

        args = [*args, *worker_run_dir(args)]
    check_writable(args)
    main = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(job)
    sys.argv = [f"dlrun {command}", *args]
    main()
    return 2 if failures or sweep.FAILED_JOBS else 0


def plugins_visible() -> None:
    """Let Hydra's plugin scan see dlrun's plugins (hydra_plugins/dlrun_*: the Optuna sweeper).

    A wheel puts them in site-packages, where the scan finds them. An editable install
    (`pip install -e .`, the README's) reaches them through an import hook that pkgutil cannot
    list, so Hydra's scan would miss them; the checkout folder holding hydra_plugins/ is then
    added to sys.path (a no-op for a wheel: site-packages is there already)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("hydra_plugins.dlrun_optuna")
    except ImportError:
        return
    if spec is not None and spec.origin:
        root = str(Path(spec.origin).resolve().parents[2])
        if root not in sys.path:
            sys.path.append(root)


def _leave(e: BaseException) -> None:
    """A run stopped by Ctrl-C or SIGTERM: it is already marked KILLED (tracking.tracked_run).
    Leave at once: a normal interpreter shutdown with TensorFlow's threads mid-step can crash
    (seen: SIGSEGV)."""
    from dlrun import console

    reason, code = (e.reason, e.code) if isinstance(e, Interrupted) else ("interrupted (Ctrl-C)", 130)
    console.error(reason)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _from_run(command: str, args: list[str]) -> int:
    """eval/predict/export/explain/attack of a logged run, outside Hydra (the run's own config is the base)."""
    from dlrun import inference

    if not any(a.startswith(("run_id=", "run_dir=")) for a in args):
        raise DlrunError(f"dlrun {command} needs a run", "run_id=<mlflow run id> or run_dir=<output folder>")
    try:
        return inference.from_run(command, args)
    except (KeyboardInterrupt, Interrupted) as e:
        _leave(e)
        return 130


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        sys.exit(0)
    if args[0] in ("-V", "--version", "version"):
        print(f"dlrun {__version__}")
        sys.exit(0)
    command, rest = args[0], args[1:]
    try:
        if command == "list":
            sys.exit(cmd_list(rest))
        if command not in COMMANDS:
            raise DlrunError(f"unknown command '{command}'", did_you_mean(command, COMMANDS))
        if command in FROM_RUN or any(a.startswith(("run_id=", "run_dir=")) for a in rest):
            code = _from_run(command, rest)
        else:
            check_group_overrides(rest)
            code = _run_hydra(command, _flags_first(rest))
    except DlrunError as e:
        from dlrun import console

        console.error(e.message, e.hint)
        sys.exit(2)
    sys.exit(code)
