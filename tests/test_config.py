"""Config tree, typed schema, registries and the pieces of the training glue."""

from __future__ import annotations

import pytest
from conftest import UnitRun
from omegaconf import OmegaConf

from dlrun.config import validate
from dlrun.config_tree import GROUPS, config_dir, group_options
from dlrun.contract import Objective
from dlrun.errors import DlrunError
from dlrun.registry import DATA, MODELS, STRATEGIES, TASKS


def test_every_registered_name_has_a_yaml_and_back():
    assert set(TASKS.names(with_aliases=True)) == set(group_options("task"))
    assert set(MODELS.names()) == set(group_options("model"))
    assert set(DATA.names()) == set(group_options("data"))
    assert set(STRATEGIES.names()) == set(group_options("strategy"))
    for group in GROUPS:
        assert (config_dir() / group).is_dir(), group


def test_every_task_composes_with_its_own_model_and_data(compose):
    for name in group_options("task"):
        cfg = compose(f"task={name}")
        task = TASKS.entry(cfg.task.name)
        assert MODELS.entry(cfg.model.name).tags == () or task.name in MODELS.entry(cfg.model.name).tags
        assert task.name in DATA.entry(cfg.data.name).tags


def test_every_preset_composes_and_validates(compose):
    for name in group_options("experiment"):
        cfg = validate(compose(f"experiment={name}"))
        assert cfg.trainer.epochs >= 1, name


def test_schema_fills_defaults_and_rejects_typos(compose):
    cfg = compose()
    OmegaConf.set_struct(cfg, False)
    del cfg.trainer["jit_compile"]  # a missing key falls back to the schema default
    cfg = validate(cfg)
    assert cfg.trainer.jit_compile is False
    with pytest.raises(DlrunError, match=r"trainer.early_stopping.patiance: unknown key \(did you mean 'patience'"):
        cfg = compose()
        OmegaConf.set_struct(cfg, False)
        cfg.trainer.early_stopping.patiance = 3
        validate(cfg)
    with pytest.raises(DlrunError, match="tracking.enabled"):
        validate(compose("tracking.enabled=maybe"))
    with pytest.raises(DlrunError, match="trainer.lr_schedule.name: unknown value 'linear'"):
        validate(compose("trainer.lr_schedule.name=linear"))
    with pytest.raises(DlrunError, match="trainer.precision"):
        validate(compose("trainer.precision=float16"))


def test_optimizers_and_schedules_build(compose):
    import keras

    from dlrun.training.compile import make_optimizer

    for name, cls in [("adam", keras.optimizers.Adam), ("adamw", keras.optimizers.AdamW),
                      ("sgd", keras.optimizers.SGD), ("rmsprop", keras.optimizers.RMSprop),
                      ("adadelta", keras.optimizers.Adadelta)]:
        opt = make_optimizer(validate(compose(f"trainer.optimizer={name}", "trainer.learning_rate=0.5")).trainer)
        assert isinstance(opt, cls) and float(opt.learning_rate) == pytest.approx(0.5)
    t = validate(compose("trainer.optimizer=sgd", "trainer.momentum=0.8")).trainer
    assert make_optimizer(t).momentum == pytest.approx(0.8)
    t = validate(compose("trainer.lr_schedule.name=cosine", "trainer.epochs=2", "trainer.learning_rate=1.0")).trainer
    opt = make_optimizer(t, steps_per_epoch=5)
    schedule = opt._learning_rate
    assert float(schedule(0)) == pytest.approx(1.0) and float(schedule(10)) == pytest.approx(0.0, abs=1e-6)


def test_callbacks_from_config_act_per_epoch_only(compose, tmp_path):
    import keras
    import numpy as np

    from dlrun.training.callbacks import trainer_callbacks

    t = validate(compose("trainer.early_stopping.enabled=true", "trainer.early_stopping.patience=1",
                         "trainer.lr_schedule.name=reduce_on_plateau")).trainer
    cbs, keeper = trainer_callbacks(t, tmp_path, has_val=True, objective=Objective("loss", maximize=False))
    kinds = {type(c).__name__ for c in cbs}
    assert {"EarlyStopping", "ReduceLROnPlateau", "BestCheckpoint"} <= kinds
    base = keras.callbacks.Callback
    for cb in cbs:  # a per-batch hook would switch off Keras' asynchronous batch dispatch
        assert type(cb).on_train_batch_end is base.on_train_batch_end, type(cb).__name__

    # the checkpoint holds the best epoch's weights, not the last ones
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    keeper.set_model(model)
    keeper.on_train_begin()
    keeper.on_epoch_end(0, {"val_loss": 1.0})
    best = model.get_weights()
    model.set_weights([w + 1 for w in best])
    keeper.on_epoch_end(1, {"val_loss": 2.0})
    keeper.on_train_end()
    saved = keras.saving.load_model(tmp_path / "best.keras")
    assert all(np.allclose(a, b) for a, b in zip(saved.get_weights(), best, strict=True))
    assert not np.allclose(model.get_weights()[0], best[0])  # the final weights stay in the model
    assert keeper.best.step == 1 and keeper.best.value == 1.0


@pytest.mark.parametrize(("objective", "values", "best_step"), [
    (Objective("map", maximize=True), [0.2, 0.6, 0.4], 2),  # a maximised objective keeps the highest
    (Objective("mean_return", maximize=True), [-5.0, -1.0, -3.0], 2),
    (Objective("rmse", maximize=False), [3.0, 1.0, 2.0], 2),  # a minimised one the lowest
])
def test_checkpoint_follows_the_objectives_direction(compose, tmp_path, objective, values, best_step):
    import keras

    from dlrun.training.callbacks import trainer_callbacks

    t = validate(compose()).trainer
    _, keeper = trainer_callbacks(t, tmp_path, has_val=True, objective=objective)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    keeper.set_model(model)
    keeper.on_train_begin()
    for epoch, v in enumerate(values):
        keeper.on_epoch_end(epoch, {objective.val: v, "val_loss": 0.0})
    assert keeper.best.step == best_step and keeper.best.monitor == objective.val


def test_a_tie_of_the_monitored_metric_goes_to_the_lower_validation_loss(compose, tmp_path):
    """Validation accuracy often repeats (1.0 from epoch 3 on a small table) while the loss still
    falls: the kept epoch is the tie with the lowest validation loss, not the first one."""
    import keras

    from dlrun.training.callbacks import trainer_callbacks

    t = validate(compose()).trainer
    _, keeper = trainer_callbacks(t, tmp_path, has_val=True, objective=Objective("accuracy", maximize=True))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    keeper.set_model(model)
    keeper.on_train_begin()
    # epoch 2 ties epoch 1 with a lower loss; epoch 3 ties with a higher one; epoch 4 is worse
    for epoch, (acc, loss) in enumerate([(1.0, 0.05), (1.0, 0.01), (1.0, 0.02), (0.9, 0.001)]):
        keeper.on_epoch_end(epoch, {"val_accuracy": acc, "val_loss": loss})
    assert (keeper.best.step, keeper.best.value, keeper.best.tie) == (2, 1.0, 0.01)


def test_early_stopping_waits_while_the_objective_is_at_chance():
    """A text model at chance for many epochs is not stopped by the patience; once it has
    left chance the patience counts as usual."""
    import keras

    from dlrun.training.callbacks import early_stopping

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    es = early_stopping(0.5)(monitor="val_accuracy", mode="max", patience=2, restore_best_weights=False)
    es.set_model(model)
    es.on_train_begin()
    for epoch in range(8):  # eight epochs at chance: patience 2 would have stopped at the third
        es.on_epoch_end(epoch, {"val_accuracy": 0.5})
        assert not model.stop_training, epoch
    for epoch, acc in enumerate([0.7, 0.6, 0.6], start=8):
        es.on_epoch_end(epoch, {"val_accuracy": acc})
    assert model.stop_training
    assert early_stopping(None) is keras.callbacks.EarlyStopping


def test_metric_direction_is_never_guessed_from_a_name(compose, tmp_path):
    from dlrun.training.callbacks import resolve_monitor, trainer_callbacks

    acc = Objective("accuracy", maximize=True)
    assert resolve_monitor("trainer.checkpoint", "auto", "auto", acc, True) == ("val_accuracy", True)
    assert resolve_monitor("trainer.checkpoint", "val_loss", "auto", acc, True) == ("val_loss", False)
    assert resolve_monitor("trainer.checkpoint", "val_auc", "auto", acc, True) == ("val_auc", True)
    assert resolve_monitor("trainer.checkpoint", "val_top5_accuracy", "auto", acc, True) == ("val_top5_accuracy", True)
    # a name that merely contains "acc" or "auc" is not taken on trust
    with pytest.raises(DlrunError, match=r"trainer.early_stopping.monitor 'val_accumulated_error': cannot tell"):
        resolve_monitor("trainer.early_stopping", "val_accumulated_error", "auto", acc, True)
    assert resolve_monitor("trainer.early_stopping", "val_accumulated_error", "min", acc, True) == \
        ("val_accumulated_error", False)
    t = validate(compose("trainer.checkpoint.monitor=val_widgets")).trainer
    with pytest.raises(DlrunError, match="set trainer.checkpoint.mode=min or trainer.checkpoint.mode=max"):
        trainer_callbacks(t, tmp_path, has_val=True, objective=acc)
    with pytest.raises(DlrunError, match="trainer.checkpoint.mode: unknown value 'up'"):
        validate(compose("trainer.checkpoint.mode=up"))
    # a monitor the run never logs is named with what it does log
    t = validate(compose("trainer.checkpoint.monitor=val_precision")).trainer
    _, keeper = trainer_callbacks(t, tmp_path, has_val=True, objective=acc)
    with pytest.raises(DlrunError, match="'val_precision' is not a logged metric.*val_accuracy"):
        keeper.on_epoch_end(0, {"val_accuracy": 0.5, "val_loss": 1.0})


def test_no_val_split_monitors_training_metrics(compose, tmp_path):
    from dlrun.training.callbacks import trainer_callbacks

    t = validate(compose("trainer.early_stopping.enabled=true", "trainer.early_stopping.monitor=auto")).trainer
    cbs, keeper = trainer_callbacks(t, tmp_path, has_val=False, objective=Objective("accuracy", True))
    (es,) = [c for c in cbs if type(c).__name__ == "EarlyStopping"]
    assert es.monitor == "accuracy" and es.mode == "max"
    assert keeper.best.monitor == "accuracy" and keeper.best.maximize


def test_smoke_wins_over_an_experiment(compose):
    cfg = validate(compose("experiment=insurance", "trainer=smoke"))
    t = cfg.trainer
    assert (t.epochs, t.limit_batches, t.fast, t.checkpoint.enabled) == (1, 3, True, False)
    assert cfg.model.hidden_units == [50]  # the rest of the preset stays
    assert validate(compose("experiment=insurance")).trainer.epochs == 100


def test_config_dir_is_packaged():
    assert (config_dir() / "config.yaml").is_file()


def test_sweeps_get_the_validation_value_at_the_evaluated_weights(compose):
    from test_rl_loop import q_learning_run

    from dlrun.contract import Fit
    from dlrun.runner import sweep_value

    acc = Objective("accuracy", maximize=True)
    history = {"val_accuracy": [0.5, 0.7, 0.6], "accuracy": [0.6, 0.8, 0.9]}
    assert sweep_value(Fit(history, best_step=2, best_value=0.7), acc) == 0.7  # the best epoch
    assert sweep_value(Fit(history), acc) == 0.6  # no checkpoint: the last epoch
    assert sweep_value(Fit({"accuracy": [0.6]}), acc) is None  # no validation: never the test value
    assert sweep_value(Fit(), acc) is None
    # a history the real RL loop produced (Q-learning on a slippery grid, environment steps)
    fit = q_learning_run(compose, UnitRun())
    val = fit.history["val_mean_return"]
    assert fit.best_step != fit.steps[-1]  # the best evaluation is not the last one here
    assert sweep_value(fit, Objective("mean_return", True)) == val[fit.steps.index(fit.best_step)] == max(val)




def test_option_files_are_the_schema_of_their_groups(compose):
    """A value of another kind than the option file's is one line naming the key and the file's
    value; choices that take a number (season: auto | 12) and `auto` stay open; every preset passes."""
    from dlrun.config import validate

    for override, message in [("model.hidden_units=true", "model.hidden_units must be a list"),
                              ("model.batch_norm=maybe", "model.batch_norm must be true or false"),
                              ("model.l2=[1]", "model.l2 must be a number")]:
        with pytest.raises(DlrunError, match=message) as e:
            validate(compose("task=tabular", override))
        assert "model=mlp sets" in (e.value.hint or "")
    with pytest.raises(DlrunError, match="data.noise must be a number"):
        validate(compose("task=sequence", "data.noise=loud"))
    validate(compose("task=sequence", "data.season=12", "model.residual=auto", "data.features=null"))
