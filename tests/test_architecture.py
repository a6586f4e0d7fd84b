"""The package's shape: no import cycles, one table of metric directions, objectives a task
declares without data (what a sweep asks before its first trial)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dlrun.config_tree import group_options
from dlrun.contract import maximized, metric_base
from dlrun.errors import DlrunError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "architecture.py"


def _architecture():
    spec = importlib.util.spec_from_file_location("architecture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles_even_through_function_level_imports():
    arch = _architecture()
    g = arch.graph()
    assert "dlrun.sweep" in g["dlrun.optuna_sweep"]  # the graph sees function-level imports (in _run_trial)
    assert arch.cycles(g) == []


def test_the_cycle_finder_finds_a_cycle():
    arch = _architecture()
    assert arch.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(("name", "up"), [
    ("val_accuracy", True), ("test/accuracy", True), ("val_top3_accuracy", True), ("map50", True),
    ("val_loss", False), ("d_loss", False), ("val_rmse", False), ("objective/val", None), ("frechet_distance", False),
    ("val_mean_return", True), ("val_label_accuracy", True), ("wobble", None),
])
def test_one_direction_table(name, up):
    assert maximized(name) is up


def test_metric_base_strips_the_split_only():
    assert metric_base("val_accuracy") == metric_base("val/accuracy") == metric_base("test/accuracy") == "accuracy"
    assert metric_base("value_loss") == "value_loss"


def test_checkpoint_and_sweep_read_the_same_table():
    from dlrun.contract import Objective
    from dlrun.optuna_sweep import resolve_direction
    from dlrun.training.callbacks import resolve_monitor

    objective = Objective("accuracy", True)
    for metric in ("val_rmse", "val_pixel_accuracy", "val_loss"):
        _, up = resolve_monitor("trainer.checkpoint", metric, "auto", objective, has_val=True)
        direction = resolve_direction({"direction": "auto", "metric": metric}, None, lambda: objective)
        assert direction == ("maximize" if up else "minimize")
    with pytest.raises(DlrunError, match="hydra.sweeper.direction=minimize"):  # no silent guess
        resolve_direction({"direction": "auto", "metric": "val_wobble"}, None, lambda: objective)


@pytest.mark.parametrize("task", group_options("task"))
def test_every_task_declares_its_objective_without_data(compose, task):
    """What a sweep asks before its first trial: no data set loaded, no TensorFlow started."""
    from dlrun.registry import TASKS

    cfg = compose(f"task={task}")
    objective = TASKS.get(cfg.task.name)().objective(cfg, None)
    assert objective.name
    assert maximized(objective.name) in (objective.maximize, None)


def test_tabular_objective_follows_the_table_without_data(compose, tmp_path):
    from dlrun.registry import TASKS

    task = TASKS.get("tabular")()
    assert task.objective(compose("task=tabular", "data=diabetes"), None).name == "rmse"
    assert task.objective(compose("task=tabular"), None).name == "accuracy"
    table = tmp_path / "t.csv"
    table.write_text("x,y\n" + "".join(f"{i},{i * 0.37:.2f}\n" for i in range(40)))
    cfg = compose("task=tabular", "data=csv", f"data.path={table}", "data.target=y")
    assert task.objective(cfg, None).name == "rmse"


def test_option_files_hold_the_defaults_the_code_reads(compose):
    """A config missing keys (a preset naming another model, a run logged before a key existed)
    gets them from the option's YAML, not from literals in code."""
    from omegaconf import OmegaConf

    from dlrun.config import validate
    from dlrun.config_tree import option_defaults

    cfg = compose("task=rnn", "model=lstm")
    with_gaps = OmegaConf.to_container(cfg)
    for key in ("recurrent_dropout", "bidirectional"):
        del with_gaps["model"][key]
    with_gaps["model"]["units"] = 7  # what the config gives still wins
    filled = validate(OmegaConf.create(with_gaps))
    assert filled.model.recurrent_dropout == option_defaults("model", "lstm")["recurrent_dropout"]
    assert filled.model.bidirectional is False and filled.model.units == 7


def test_a_builder_called_with_a_partial_config_gets_the_option_defaults():
    from omegaconf import OmegaConf

    from dlrun.contract import DataInfo
    from dlrun.models import build_model

    info = DataInfo("t", input_shape=(4,), target="multiclass", num_classes=3)
    model = build_model(OmegaConf.create({"name": "mlp", "hidden_units": [5]}), info, task="tabular")
    assert model.output_shape == (None, 3)


@pytest.mark.parametrize(("override", "needle"), [
    ("env.num_envs=0", "env.num_envs must be >= 1"),
    ("env.vector=threads", "env.vector: unknown value 'threads'"),
    ("env.normalize_obs=maybe", "env.normalize_obs"),
])
def test_env_is_a_typed_group(compose, override, needle):
    from dlrun.config import validate

    with pytest.raises(DlrunError, match=needle):
        validate(compose("task=rl", override))


def test_a_source_called_directly_with_a_partial_config_gets_its_option_files_values():
    """Registered builders and sources fill their node from their option file however they are
    called (tests and plugins call them directly), so code reads keys and the YAML holds values."""
    from omegaconf import OmegaConf

    from dlrun.config_tree import option_defaults
    from dlrun.data.series import synthetic_series

    series = synthetic_series(OmegaConf.create({"name": "synthetic_series", "length": 120}))
    yaml_level = option_defaults("data", "synthetic_series")["level"]
    assert f"level={yaml_level}" in series.source and len(series.frame) == 120  # the file's level, the given length
    mine = synthetic_series(OmegaConf.create({"name": "synthetic_series", "length": 120, "level": 3.5}))
    assert "level=3.5" in mine.source


def test_partial_env_configs_and_users_files_read_their_schemas_defaults():
    from dataclasses import fields

    from dlrun.config import EnvConfig
    from dlrun.data.csv import FileOptions
    from dlrun.rl.rollout import env_option

    num_envs = next(f.default for f in fields(EnvConfig) if f.name == "num_envs")
    assert env_option({}, "num_envs") == num_envs and env_option({"num_envs": 4}, "num_envs") == 4
    assert env_option(None, "vector") == "sync"
    opts = FileOptions.of({"sep": ";", "name": "csv"})
    assert (opts.sep, opts.header, opts.on_bad_box) == (";", True, "skip") and FileOptions.of(None).sep == "auto"


def test_literal_config_defaults_stay_few():
    """`cfg.x.get("key", <literal>)` repeats what an option file holds; the few left are options
    only some sources or models have (scripts/architecture.py --defaults lists them)."""
    found = _architecture().literal_defaults()
    assert len(found) <= 20, "\n".join(found)
