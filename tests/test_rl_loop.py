"""The one RL learning loop (dlrun/rl/learn.py) under the runner's protocol: Keras-style history,
the run's callbacks at each evaluation (best checkpoint, early stopping, Optuna pruning), the
sweep objective on the validation episodes, the baselines on the console, and the options an RL
run refuses in one line before training."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import pytest
from conftest import UnitRun, stderr_line

import dlrun.rl  # noqa: F401  (registers the environments)

SLIPPERY = {"slip": 0.5}  # greedy returns vary from episode to episode: evaluations go up and down


def slippery_grid():
    return gym.make("dlrun/GridWorld-v0", **SLIPPERY)


def q_learning_run(compose, run, total=4000, every=500):
    """Q-learning on the slippery GridWorld through the real loop, evaluated greedily on the
    validation seeds as RLTask.fit does: the Fit."""
    from omegaconf import OmegaConf

    from dlrun.rl.learn import learn
    from dlrun.rl.nets import q_table
    from dlrun.rl.rollout import run_episodes
    from dlrun.rl.tabular import TabularQ
    from dlrun.tasks.rl import greedy

    cfg = OmegaConf.create(compose("task=rl", "agent=q_learning").agent)
    agent = TabularQ(q_table(20, 4), 20, 4, cfg)
    seeds = list(range(110_000, 110_005))

    def evaluate():
        return float(run_episodes(slippery_grid, seeds, greedy(agent.model))[0].mean())

    return learn(agent, run, slippery_grid, 0, total, every, evaluate)


def test_the_loop_history_is_keras_style_and_the_sweep_value_is_its_best_validation_point(compose):
    from dlrun.contract import Objective
    from dlrun.runner import sweep_value

    fit = q_learning_run(compose, UnitRun())
    assert set(fit.history) == {"episode_return", "epsilon", "episodes", "seconds", "steps_per_second",
                                "val_mean_return"}  # no train/ or val/ prefixes: the tracker adds them
    # a row when the next 500 steps are done (whole episodes: a few steps more), the last at the budget
    assert len(fit.steps) == 8 and fit.steps[-1] == 4000 and fit.unit == "update"
    assert all(500 * k <= s < 500 * k + 100 for k, s in enumerate(fit.steps, start=1))
    val = fit.history["val_mean_return"]
    assert all(math.isfinite(v) for v in val)  # every_steps = the agent's rows: each row is evaluated
    objective = Objective("mean_return", maximize=True)
    # the best checkpoint kept the best evaluation at its environment step; a sweep gets that point
    assert fit.best_value == max(val) and fit.best_step == fit.steps[val.index(max(val))]
    assert fit.best_step != fit.steps[-1] and val[-1] < max(val)  # here the last is not the best
    assert sweep_value(fit, objective) == max(val)
    # without a checkpoint the evaluated weights are the last ones, and so is the value
    last = q_learning_run(compose, UnitRun(checkpoint={"enabled": False}))
    assert last.best_step is None and sweep_value(last, objective) == last.history["val_mean_return"][-1]


def test_early_stopping_counts_evaluations_and_keeps_the_best_weights(compose):
    # min_delta so large that nothing after the first evaluation improves: patience 2 stops at the third
    run = UnitRun(early_stopping={"enabled": True, "patience": 2, "min_delta": 1e6})
    fit = q_learning_run(compose, run)
    assert len(fit.steps) == 3 and len(fit.history["val_mean_return"]) == 3
    assert fit.seen == fit.steps[-1] < 1600  # stopped, not run to its 4,000 steps


def test_optuna_pruning_stops_the_loop_at_its_first_evaluation(compose):
    import optuna

    from dlrun import optuna_sweep
    from dlrun.contract import Objective
    from dlrun.tracking import Tracker
    from dlrun.training import extensions

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    trial = study.ask()
    current = optuna_sweep.TrialExtension(trial, None, prune=True)
    cfg = compose("task=rl")
    ctx = extensions.RunContext(cfg, [], Path("."), None, "rl", None, Tracker(cfg.tracking, enabled=False), True,
                                objective=Objective("mean_return", True))
    with extensions.attached(current):  # what the sweeper does around a trial's job
        assert current in extensions.for_run(ctx)
        run = UnitRun()
        run.callbacks += current.callbacks(ctx)
        fit = q_learning_run(compose, run)
    assert current not in extensions.for_run(ctx)  # detached after the job
    assert current.pruned_at == 1 and len(fit.steps) == 1  # reported once, pruned, stopped
    assert study.trials[0].intermediate_values == {1: fit.history["val_mean_return"][0]}


def test_a_stop_request_ends_the_loop_after_the_current_unit(compose):
    import keras

    run = UnitRun()  # Ctrl-C / SIGTERM call request_stop on the runner's handle, here at the first evaluation
    run.callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: run.request_stop("test")))
    fit = q_learning_run(compose, run)
    assert run.should_stop and len(fit.steps) == 1 and fit.seen < 600


def test_learning_curves_never_draw_validation_series_as_training():
    from dlrun.plots import close, learning_curves

    history = {"loss": [1.0, 0.5, 0.2], "val_mean_return": [math.nan, math.nan, 3.0],
               "train/episode_return": [1.0, 2.0, 3.0], "val/accuracy": [0.1, 0.2, 0.3]}
    fig = learning_curves(history, "step", [10, 20, 30])
    panels = {ax.get_title(): [ln.get_label() for ln in ax.get_lines()] for ax in fig.axes if ax.get_title()}
    close({"f": fig})
    assert panels == {"loss": ["train"], "episode_return": ["train"], "mean_return": ["validation"],
                      "accuracy": ["validation"]}


# -- through dlrun: one real Optuna search of one RL trial ---------------------------------------
SMALL = ["task=rl", "env.num_envs=2", "agent.n_steps=64", "task.total_steps=1024", "task.eval.every_steps=256",
         "task.eval.during=3", "task.eval.episodes=5", "tracking.log_model=false", "tracking.system_metrics=false"]


@pytest.fixture(scope="module")
def rl_search(tmp_path_factory):
    """`dlrun train -m hparams_search=optuna_rl task=rl ...`, one trial, run once for this module."""
    from conftest import _checked, dlrun_inprocess, store_runs
    from mlflow.tracking import MlflowClient

    workdir = tmp_path_factory.mktemp("rl_search")
    args = ("train", "-m", "hparams_search=optuna_rl", *SMALL, "hydra.sweeper.n_trials=1")
    proc = _checked(dlrun_inprocess(args, workdir), args, 0)
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    (run,) = [r for r in store_runs(client) if "test/mean_return" in r.data.metrics]
    study = optuna_study(workdir)
    return proc, client, run, study


def optuna_study(workdir):
    import optuna

    name = "rl-policy"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/multirun/optuna/{name}/optuna.db")


def test_the_rl_search_selects_on_the_validation_episodes(rl_search):
    _, client, run, study = rl_search
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE" and trial.user_attrs["mlflow_run_id"] == run.info.run_id
    val = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/mean_return")}
    assert sorted(val) == [256, 512, 768, 1024]  # an evaluation every 256 environment steps
    m = run.data.metrics
    # the study's value is a validation point (the best: the weights the report evaluated) ...
    assert trial.value == m["objective/val"] == max(val.values())
    # ... and not the test return, which differs on this run
    assert trial.value != m["test/mean_return"]
    assert run.data.tags["dlrun.evaluated_weights"].startswith("best (val_mean_return")
    assert list(trial.intermediate_values) == [1, 2, 3, 4]  # reported at each evaluation
    # every training metric once per update under train/, the validation under val/: nothing else
    names = {k.split("/")[0] for k in m} - {"system"}
    assert names == {"train", "val", "test", "baseline", "timing", "objective"}
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 1024 // 128


def test_the_console_shows_the_random_baseline_beside_the_return(rl_search):
    proc, _, run, _ = rl_search
    m = run.data.metrics
    table = proc.stdout[proc.stdout.index("comparison"):]
    rows = {line.split("│")[0].strip(): line for line in table.splitlines()[:6] if "│" in line}
    assert f"{m['test/mean_return']:.4f}" in rows["ppo (greedy)"]
    assert f"{m['baseline/random/mean_return']:.4f}" in rows["random"]


def test_the_orso_comparison_has_the_optimum_and_the_ratios():
    from dlrun.tasks.rl import comparison_rows

    m = {"test/mean_return": 0.6, "test/std_return": 0.1, "baseline/random/mean_return": -1.0,
         "baseline/random/std_return": 0.5, "baseline/optimal/mean_return": 0.75, "baseline/optimal/std_return": 0.05}
    rows = comparison_rows("ppo", m)
    assert [r["policy"] for r in rows] == ["ppo (greedy)", "random", "optimum"]
    assert [r["ratio_to_optimum"] for r in rows] == pytest.approx([0.8, -1 / 0.75, 1.0])


# -- refused in one line, before anything is trained or logged ------------------------------------
@pytest.mark.parametrize("args,words", [
    (("strategy=mirrored", "strategy.cpu_replicas=2"), "no batch to split across replicas"),
    (("trainer.resume=auto",), "an RL run cannot be resumed"),
])
def test_what_an_rl_run_cannot_honour_is_one_line(run_dlrun, workdir, args, words):
    proc = run_dlrun("train", "task=rl", *args, expect=2)
    assert words in stderr_line(proc)
    assert not (workdir / "mlflow.db").exists()  # refused before any MLflow run started


@pytest.mark.parametrize("args,words", [
    (("trainer.precision=mixed_float16",), "mixed precision does not apply"),
    (("trainer.learning_rate=0.01",), "trainer.learning_rate=0.01 has no meaning for task=rl"),
    (("trainer.epochs=5",), "use task.total_steps"),
    (("trainer.lr_schedule.name=reduce_on_plateau",), "agent.anneal_lr"),
    (("trainer.jit_compile=true",), "agent.jit_compile"),
    (("task.eval.val_seed=10050",), "overlap the test episodes"),
    (("task.eval.every_steps=0",), "task.eval.every_steps must be an integer >= 1"),
])
def test_the_rl_check_refuses_options_it_cannot_honour(compose, args, words):
    import tensorflow as tf

    from dlrun.config import validate
    from dlrun.errors import DlrunError
    from dlrun.tasks.rl import RLTask

    with pytest.raises(DlrunError) as e:
        RLTask().check(validate(compose("task=rl", *args)), tf.distribute.get_strategy())
    assert words in f"{e.value.message} ({e.value.hint})"


def test_the_rl_check_accepts_what_it_honours(compose):
    import tensorflow as tf

    from dlrun.config import validate
    from dlrun.config_tree import config_dir
    from dlrun.tasks.rl import RLTask

    strategy = tf.distribute.get_strategy()
    for args in [(), ("trainer=smoke",), ("trainer.early_stopping.enabled=true", "trainer.checkpoint.evaluate=last",
                                          "trainer.seed=3", "trainer.deterministic=true", "tracking.tensorboard=true")]:
        RLTask().check(validate(compose("task=rl", *args)), strategy)
    presets = [p.stem for p in (config_dir() / "experiment").glob("*.yaml") if "task: rl" in p.read_text()]
    assert len(presets) >= 9
    for name in presets:  # every RL preset
        RLTask().check(validate(compose(f"experiment={name}")), strategy)
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # the two logical CPUs of conftest
    with pytest.raises(Exception, match="MirroredStrategy, 2 replica"):
        RLTask().check(validate(compose("task=rl", "strategy=cpu", "strategy.cpu_replicas=2")), two)


def test_smoke_runs_are_short(run_dlrun, runs, mlflow_client):
    run_dlrun("train", "task=rl", "trainer=smoke", "tracking.log_model=false")
    run = runs()[0]
    m = run.data.metrics
    val = mlflow_client.get_metric_history(run.info.run_id, "val/mean_return")
    assert m["test/episodes"] == 3 and [p.step for p in val] == [1024]  # task.smoke's budget, not 100,000 steps
    assert "objective/val" in m and "baseline/random/mean_return" in m


def test_tensorboard_gets_one_point_per_evaluation(compose, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlrun.training.callbacks import tensorboard

    run = UnitRun()
    run.callbacks.append(tensorboard(tmp_path / "tb"))
    fit = q_learning_run(compose, run, total=1500)
    events = EventAccumulator(str(tmp_path / "tb" / "validation"))
    events.Reload()
    points = events.Tensors("epoch_mean_return")
    assert [p.step for p in points] == [0, 1, 2]  # evaluations are the callbacks' epochs
    assert [float(tf_value(p)) for p in points] == pytest.approx(fit.history["val_mean_return"])


def tf_value(point):
    import tensorflow as tf

    return tf.make_ndarray(point.tensor_proto)
