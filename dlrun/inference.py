"""`dlrun eval` and `dlrun predict`: a trained run's served model on the run's test split, on
another labelled file, or on a user's inputs.

A run is found by MLflow run id (`run_id=`) or by its output folder (`run_dir=`, also for
tracking=off runs). Its logged config is the base; overrides are checked against it (not
against the defaults) and applied on top. Nothing is re-fitted: the served model carries the
training-time preprocessing. A failing eval never changes the run it reads, and metrics on
other data go under their own prefix (eval/<file stem>/...), never over the run's test/*.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from dlrun import console
from dlrun.contract import DatasetRecord, Served
from dlrun.errors import DlrunError, did_you_mean
from dlrun.overrides import override_key, value_of

# Arguments of eval/predict that are not config keys.
RUN_KEYS = ("run_id", "run_dir")
EVAL_OPTIONS = ("input",)
PREDICT_OPTIONS = ("input", "output", "rows")  # tasks may take more (prompt, length, temperature)
EXPORT_OPTIONS = ("format", "output", "quantize")
LOOKING_INSIDE = ("explain", "attack")  # options: configs/explain.yaml, configs/attack.yaml (dlrun/explain/)


def from_run(command: str, args: list[str]) -> int:
    """eval/predict/export/explain/attack on a logged run: `run_id=<id>` or `run_dir=<output
    folder>`, then overrides and the command's options."""
    from dlrun.runner import quiet_tensorflow

    where, options, overrides = _split_args(command, args)
    if command in LOOKING_INSIDE:  # checked before anything is downloaded
        from dlrun.explain.options import read

        options = read(command, options, RUN_KEYS)
    quiet_tensorflow()
    with tempfile.TemporaryDirectory(prefix="dlrun-run-") as tmp:
        cfg, served_dir, tracking_uri = _load_run(where, overrides, Path(tmp))
        if command == "eval":
            evaluate(cfg, where, served_dir, options, overrides, tracking_uri)
        elif command == "export":
            export(cfg, where, served_dir, options)
        elif command in LOOKING_INSIDE:
            from dlrun.explain.command import run

            run(command, cfg, where, served_dir, options)
        else:
            predict(cfg, where, served_dir, options)
    return 0


def _split_args(command: str, args: list[str]):
    where, options, overrides = {}, {}, []
    for arg in args:
        if arg.startswith("-"):
            raise DlrunError(f"dlrun {command} with run_id/run_dir takes key=value arguments, got '{arg}'")
        if "=" not in arg:
            raise DlrunError(f"cannot parse '{arg}'", "use key=value")
        key, value = arg.split("=", 1)
        if key in RUN_KEYS:
            where[key] = value
        elif "." in key or key.lstrip("+~") in _groups():
            overrides.append(arg)
        elif command == "eval" and key not in EVAL_OPTIONS:
            raise DlrunError(f"dlrun eval: unknown argument '{key}'",
                             did_you_mean(key, [*RUN_KEYS, *EVAL_OPTIONS, "data.path", "tracking.uri"]))
        elif command == "export" and key not in EXPORT_OPTIONS:
            raise DlrunError(f"dlrun export: unknown argument '{key}'", did_you_mean(key, [*RUN_KEYS, *EXPORT_OPTIONS]))
        else:
            options[key] = value
    return where, options, overrides


def _groups():
    from dlrun.config_tree import GROUPS

    return GROUPS


# -- loading a run ------------------------------------------------------------------------


def _load_run(where: dict, overrides: list[str], tmp: Path):
    """(config with overrides applied, served-model folder, tracking URI read from)."""
    from omegaconf import OmegaConf

    if "run_dir" in where:
        folder = Path(where["run_dir"])
        config_file = folder / ".hydra" / "config.yaml"
        served_dir = folder / "served"
        if not config_file.is_file():
            raise DlrunError(f"run_dir '{folder}' is not a dlrun output folder (no .hydra/config.yaml)")
        if not (served_dir / "model.keras").is_file():
            raise DlrunError(f"run_dir '{folder}' has no served model (did the run finish?)")
        logged, uri = OmegaConf.load(config_file), None
    else:
        tracking_uri = value_of(overrides, "tracking.uri") or None
        logged, served_dir, uri = _download(str(where["run_id"]), tracking_uri, tmp)
    OmegaConf.set_struct(logged, False)
    with contextlib.suppress(Exception):
        logged.pop("hydra")
    cfg = apply_overrides(logged, overrides)
    if uri is not None:
        cfg.tracking.uri = uri
    return cfg, served_dir, uri


def _download(run_id: str, tracking_uri: str | None, tmp: Path):
    """The logged config and served model of an MLflow run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from dlrun.tracking import check_reachable, quiet_mlflow_logs

    quiet_mlflow_logs()
    client = MlflowClient(tracking_uri=tracking_uri or None)
    check_reachable(client.tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise DlrunError(f"run '{run_id}': {str(e.message).splitlines()[0]}",
                         "check run_id and tracking.uri / MLFLOW_TRACKING_URI") from None
    status = run.info.status
    try:
        config_file = client.download_artifacts(run_id, "config.yaml", str(tmp))
        served_dir = client.download_artifacts(run_id, "served", str(tmp))
    except (MlflowException, OSError):
        why = f"it ended {status}" + (f": {run.data.tags['dlrun.error']}" if run.data.tags.get("dlrun.error") else "")
        hint = None
        if status == "RUNNING":
            from dlrun.training.backup import running_state

            command = f"dlrun train {run.data.tags.get('dlrun.overrides', '')} trainer.resume={run_id}"
            why, hint = running_state(run.data.tags.get("dlrun.workdir"), " ".join(command.split()))
        raise DlrunError(f"run '{run_id}' has no served model: {why}" if status != "FINISHED"
                         else f"run '{run_id}' has no served model (logged with tracking.log_model=false?)",
                         hint) from None
    return OmegaConf.load(config_file), Path(served_dir), client.tracking_uri


def apply_overrides(cfg, overrides: list[str]):
    """Hydra-syntax overrides on a logged config: a key must exist in it (or be added with +);
    a group override (data=csv) takes that group's defaults from the config tree."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import DictConfig, OmegaConf

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise DlrunError(f"cannot parse overrides: {str(e).splitlines()[0]}") from None
    for o in parsed:
        key = o.key_or_group
        if o.is_sweep_override():
            raise DlrunError(f"{key}: eval and predict take one value, not a sweep")
        if o.is_delete():
            raise DlrunError(f"~{key}: deleting keys is not supported here")
        value = o.value()
        if "." not in key and key in _groups():
            if key == "task":
                raise DlrunError("a logged run's task cannot be changed", "train a new run for another task")
            cfg[key] = _group_node(key, str(value))
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        # list the keys: OmegaConf says a ??? (missing) value is not "in" its node
        known = [str(k) for k in node] if isinstance(node, DictConfig) else []
        if not o.is_add() and leaf not in known:
            raise DlrunError(f"{key}: not a key of this run's config", did_you_mean(leaf, known) if known else None)
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def _group_node(group: str, option: str):
    """The composed node of one group option (its own defaults list applied)."""
    from hydra import compose, initialize_config_dir

    from dlrun.config_tree import config_dir, group_options

    if option not in group_options(group):
        raise DlrunError(f"unknown {group} '{option}'", did_you_mean(option, group_options(group)))
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=[f"{group}={option}"])[group]


# -- eval ---------------------------------------------------------------------------------


def evaluate(cfg, where: dict, served_dir: Path, options: dict, overrides: list[str], tracking_uri) -> dict:
    """Score the served model: on a file (`input=` or a new data.path) every row, logged as
    eval/<stem>/*; on other generated data its test split as eval/<name>/*; with no data
    override the run's own test split (test/*, the same values as at training)."""
    from dlrun.runner import build_data, prepare
    from dlrun.serving import load

    cfg, task_name, strategy = prepare(cfg)
    from dlrun.registry import TASKS

    task = TASKS.get(task_name)()
    served = load(served_dir)
    data_keys = [k for k in map(override_key, overrides) if k and (k == "data" or k.startswith("data."))]
    source = options.get("input") or (cfg.data.get("path") if "data.path" in data_keys else None)
    record = None
    if source:
        examples = task.read(cfg, str(source), served)
        name = Path(str(source)).stem or Path(str(source)).name
        prefix = f"eval/{_safe(name)}"
        console.header("eval", task_name, cfg.model.name, name, {"rows": len(examples)}, where.get("run_id"))
        report = task.score(cfg, served, examples).prefixed(prefix)
        record = DatasetRecord(name, examples.source or str(Path(str(source)).resolve()), "evaluation",
                               examples.rows, cfg.data.get("target") if cfg.get("data") else None)
    else:
        data, _, _ = build_data(task, cfg, strategy)
        console.header("eval", task_name, cfg.model.name, data.info.name, {"split": "test"}, where.get("run_id"))
        report = task.evaluate(cfg, served, data)
        if data_keys:  # other data than the run's: never over the run's own test metrics
            prefix = f"eval/{_safe(data.info.name)}"
            report.metrics = {f"{prefix}/{k.split('/', 1)[1]}": v for k, v in report.metrics.items()
                              if k.startswith("test/")}
            record = next((r for r in data.records if r.context == "testing"), None)
            if record is not None:
                record.context = "evaluation"
        else:
            prefix = "test"
            report.metrics = {k: v for k, v in report.metrics.items() if k.startswith("test/")}
    console.report(report, title=f"{task_name} eval")
    from dlrun.plots import close

    close(report.figures)
    if "run_id" in where and cfg.tracking.enabled:
        from dlrun.tracking import log_to_existing_run

        log_to_existing_run(cfg.tracking, where["run_id"], report.metrics, report.tables, record,
                            prefix=prefix.replace("/", "_"), files=report.files)
        console.console.print(f"[green]logged[/] {len(report.metrics)} metrics ({prefix}/*) to run {where['run_id']}")
    return report.metrics


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^0-9A-Za-z_\-.]", "_", name)[:80] or "data"


# -- predict ------------------------------------------------------------------------------


def predict(cfg, where: dict, served_dir: Path, options: dict):
    """Answers for a user's inputs: written as CSV beside the input rows, previewed on screen."""
    from omegaconf import OmegaConf

    from dlrun.registry import TASKS
    from dlrun.runner import prepare
    from dlrun.serving import load

    with contextlib.suppress(Exception):
        cfg.predict = OmegaConf.create(dict(options))
    cfg, task_name, _ = prepare(cfg)
    task = TASKS.get(task_name)()
    served: Served = load(served_dir)
    source = options.get("input")
    examples = task.read(cfg, str(source) if source else "", served)
    frame = task.predict(cfg, served, examples)
    rows = examples.rows
    if rows is not None and len(rows) == len(frame):
        frame = beside(rows, frame, served.meta.get("target"))
    output = Path(options.get("output") or "predictions.csv")
    if output.is_dir():  # a folder (segmentation writes its mask PNGs there): the table goes inside
        output = output / "predictions.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        frame.to_csv(output, index=False)
    except OSError as e:
        raise DlrunError(f"cannot write predictions to '{output}': {e.strerror}") from None
    shown = int(options.get("rows", 10))
    console.print_rows(frame.head(shown).to_dict("records"), f"predictions ({len(frame)} rows, first {min(shown, len(frame))})")
    console.console.print(f"[green]wrote[/] {len(frame)} predictions to {output}"
                          + (f" ({os.path.abspath(output)})" if not output.is_absolute() else ""))
    if examples.targets is not None:
        _score_answers(task, cfg, served, examples)
    return frame


def beside(rows, answers, target: str | None = None):
    """The user's rows as they are, then the answers, whose names never take one of the rows'
    (pandas would keep both columns under one name, and the table would show one): the main
    answer (label or prediction) is predicted_<target> when the run knows its target column,
    and any answer whose name the rows hold gets predicted_ in front."""
    import pandas as pd

    taken = {str(c) for c in rows.columns}
    names = {}
    for col in answers.columns:
        name = f"predicted_{target}" if target and col in ("label", "prediction") else str(col)
        while name in taken:
            name = f"predicted_{name}"
        taken.add(name)
        names[col] = name
    return pd.concat([rows.reset_index(drop=True), answers.rename(columns=names).reset_index(drop=True)], axis=1)


def _score_answers(task, cfg, served, examples) -> None:
    """When the file holds the true answers too, how many the model got right (one line)."""
    from dlrun.plots import close
    from dlrun.tasks.base import Task

    if type(task).score is Task.score:  # a task that does not score examples
        return
    try:
        report = task.score(cfg, served, examples)
    except DlrunError as e:
        console.warn(f"the file's answers could not be scored: {e.message}")
        return
    close(report.figures)
    key = report.primary if report.primary in report.metrics else next(iter(report.metrics), None)
    if key is not None:
        console.console.print(f"the file holds the true answers: {key} {report.metrics[key]:.4g} on {len(examples)} rows")


def export(cfg, where: dict, served_dir: Path, options: dict) -> dict:
    """Write the served model in a serving format, check it with its own runtime, log the check."""
    from dlrun import export as exporting
    from dlrun.serving import load

    fmt = options.get("format")
    if not fmt:
        raise DlrunError("dlrun export needs format=", f"one of {', '.join(exporting.FORMATS)}")
    output = Path(options.get("output") or f"export/{fmt}")
    served = load(served_dir)
    result = exporting.export(served, served_dir, fmt, output, options.get("quantize"))
    diff = result.get("max_abs_diff")
    checked = f"max abs diff vs the Keras model {diff:.3g}" if diff is not None else "not checked (no runtime)"
    console.console.print(f"[green]exported[/] {fmt} to {result['path']} ({checked})")
    if diff is not None and "run_id" in where and cfg.tracking.enabled:
        from dlrun.tracking import log_to_existing_run

        log_to_existing_run(cfg.tracking, where["run_id"], {f"export/{fmt}/max_abs_diff": diff})
    return result


def evaluate_checkpoint(cfg) -> dict:
    """`dlrun eval checkpoint=<best.keras> task=...` (no MLflow): the data is rebuilt as in
    training (same config, same seed), the saved network is put behind it and scored. The path
    is checked before TensorFlow starts (prepare imports it quietly)."""
    from dlrun.registry import TASKS
    from dlrun.runner import build_data, prepare

    path = Path(str(cfg.checkpoint))
    if not path.is_file():
        raise DlrunError(f"checkpoint '{path}' does not exist" if not path.exists()
                         else f"checkpoint '{path}' is not a file", "give the path of a .keras file")
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DlrunError(f"checkpoint '{path}' is not a Keras model file (a .keras file is a zip archive)")
    _check_origin(path, str(cfg.task.name))
    cfg, task_name, strategy = prepare(cfg)
    import keras

    task = TASKS.get(task_name)()
    data, _, _ = build_data(task, cfg, strategy)
    console.header("eval", task_name, cfg.model.name, data.info.name, {"model": path.name}, None)
    import dlrun.training.adversarial  # noqa: F401  (registers the class of task.adversarial checkpoints)

    try:
        with strategy.scope():
            model = keras.saving.load_model(path)
    except (ValueError, OSError, TypeError) as e:
        raise DlrunError(f"cannot load model '{path}': {str(e).splitlines()[0][:300]}") from None
    _check_fits(path, model, data.info)
    try:
        with strategy.scope():
            served = task.serving(cfg, model, data)
        report = task.evaluate(cfg, served, data)
    except ValueError as e:  # what the checks above cannot see: Keras' own input check names it
        text = str(e)
        if "incompatible with the layer" not in text and "expects" not in text:
            raise
        raise DlrunError(f"checkpoint '{path.name}' does not fit task={task_name} data={data.info.name}: "
                         f"{text.splitlines()[0][:200]}", "evaluate it with the task and data it was trained on") from None
    console.report(report, title=f"{task_name} eval")
    from dlrun.plots import close

    close(report.figures)
    return report.metrics


def _check_origin(path: Path, task: str) -> None:
    """Before TensorFlow: a served model (raw inputs in) is evaluated through its run folder,
    and a checkpoint from a run folder must be evaluated as the task that trained it."""
    from omegaconf import OmegaConf

    from dlrun.serving import SPEC_FILE

    folder = path.resolve().parent
    if (folder / SPEC_FILE).is_file():
        run_dir = folder.parent if (folder.parent / ".hydra" / "config.yaml").is_file() else None
        raise DlrunError(f"checkpoint '{path}' is a served model (raw inputs in, preprocessing inside), not a "
                         "trained network", f"evaluate its run: dlrun eval run_dir={_shown(run_dir)}" if run_dir
                         else "evaluate its run: dlrun eval run_id=<its MLflow run id>")
    config = folder / ".hydra" / "config.yaml"
    if config.is_file():
        from dlrun.registry import TASKS

        trained = OmegaConf.select(OmegaConf.load(config), "task.name", default=None)
        if trained and TASKS.canonical(str(trained)) != TASKS.canonical(task):
            raise DlrunError(f"checkpoint '{path}' was trained by task={trained} ({_shown(config)}), not task={task}",
                             f"add task={trained} (and its data), or evaluate the run: dlrun eval "
                             f"run_dir={_shown(folder)}")


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _check_fits(path: Path, model, info) -> None:
    """The network's inputs and outputs against the data it is about to be scored on."""
    what = "a served model (raw inputs in)" if isinstance(model.input, dict) else None
    if what:
        raise DlrunError(f"checkpoint '{path.name}' takes named inputs ({', '.join(model.input)}): {what}",
                         "evaluate its run instead: dlrun eval run_dir=<run folder> or run_id=<id>")
    expects = tuple(getattr(model, "input_shape", ())[1:])
    given = tuple(info.input_shape or ())
    if expects and given and (len(expects) != len(given) or any(
            a is not None and b is not None and a != b for a, b in zip(expects, given, strict=True))):
        what = f"{expects[-1]} features" if len(expects) == 1 else f"inputs of shape {expects}"
        raise DlrunError(f"checkpoint '{path.name}' expects {what}; data '{info.name}' gives "
                         f"{given[-1] if len(given) == 1 else given}",
                         "evaluate it with the task, data (and data options) it was trained on")
    from dlrun.models.heads import HEADS, head_spec

    out = getattr(model, "output_shape", None)
    if info.target in HEADS and isinstance(out, tuple) and out and isinstance(out[-1], int):
        units = head_spec(info, {})[2]
        if out[-1] != units:
            raise DlrunError(f"checkpoint '{path.name}' has {out[-1]} outputs; data '{info.name}' needs {units} "
                             f"({info.target} target)", "evaluate it with the data it was trained on")
