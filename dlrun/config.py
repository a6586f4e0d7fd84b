"""Typed schema for the shared config groups (trainer, tracking, strategy).

The dataclasses are registered in Hydra's ConfigStore (group ``schema``) so other configs can
extend them, and `validate` checks a composed config against them: a misspelled key or a value
of the wrong type becomes a one-line DlrunError that names the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from dlrun.errors import DlrunError, did_you_mean

# trainer.optimizer -> the keras.optimizers class
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop", "adadelta": "Adadelta",
              "adagrad": "Adagrad", "nadam": "Nadam"}
LR_SCHEDULES = ("constant", "cosine", "reduce_on_plateau")
LOOPS = ("fit", "custom")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SMOKE_BATCHES = 3


@dataclass
class LRScheduleConfig:
    name: str = "constant"
    min_lr: float = 0.0  # cosine floor and reduce_on_plateau floor
    factor: float = 0.5  # reduce_on_plateau
    patience: int = 5  # reduce_on_plateau
    monitor: str = "val_loss"


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "val_loss"
    patience: int = 10
    min_delta: float = 0.0
    restore_best_weights: bool = True


@dataclass
class CheckpointConfig:
    enabled: bool = True  # keep the best model of the run (by monitor) on disk
    monitor: str = "val_loss"
    save_best_only: bool = True
    min_interval_s: float = 30.0  # write at most this often; the best state is always written at the end


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 32  # per replica; global batch = batch_size * replicas
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9  # sgd and rmsprop
    weight_decay: float = 0.004  # adamw
    clipnorm: float | None = None
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    seed: int = 42
    deterministic: bool = False
    loop: str = "fit"
    precision: str = "float32"
    jit_compile: bool = False
    steps_per_execution: int = 1
    limit_batches: int | None = None  # cap batches per epoch in every split (smoke runs)
    fast: bool = False  # tasks use a tiny subset of their data
    smoke: bool = False  # trainer=smoke: forces the smoke settings over any experiment's values
    progress: bool = True


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None  # None: MLFLOW_TRACKING_URI or MLflow's default (./mlflow.db)
    experiment: str | None = None  # None: the task name
    run_name: str | None = None  # None: task-model-time
    log_model: bool = True
    log_plots: bool = True
    log_dataset: bool = True
    tensorboard: bool = False  # also write TensorBoard event files (logged under tensorboard/)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class StrategyConfig:
    name: str = "auto"
    devices: list[str] | None = None  # mirrored: explicit device list
    gpu_index: int = 0  # gpu: which GPU
    cpu_replicas: int = 1  # split the CPU into N logical devices (mirrored without GPUs)
    cluster_resolver: str = "tf_config"  # multi_worker: tf_config | slurm
    communication: str = "auto"  # multi_worker: auto | ring | nccl
    tpu: str | None = None  # tpu: address or name; None = local/env
    memory_growth: bool = True


SCHEMAS: dict[str, type] = {
    "trainer": TrainerConfig,
    "tracking": TrackingConfig,
    "strategy": StrategyConfig,
}


def register_schemas() -> None:
    """Register the schema dataclasses in Hydra's ConfigStore (group 'schema')."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        cs.store(group="schema", name=group, node=schema)


def _check_keys(node: Any, schema: type, prefix: str) -> None:
    from omegaconf import DictConfig

    if not isinstance(node, DictConfig):
        raise DlrunError(f"{prefix}: expected a mapping, got {node!r}")
    known = {f.name: f for f in fields(schema)}
    for key in node:
        if key not in known:
            raise DlrunError(f"{prefix}.{key}: unknown key", did_you_mean(key, known))
        sub = known[key].default_factory
        if is_dataclass(sub):
            _check_keys(node[key], sub, f"{prefix}.{key}")


def validate(cfg) -> Any:
    """Check trainer/tracking/strategy against the schema and the cross-field rules.

    Returns the config with the typed groups merged in (defaults filled, types converted).
    """
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    for group, schema in SCHEMAS.items():
        node = cfg.get(group)
        if node is None:
            raise DlrunError(f"config group '{group}' is missing")
        _check_keys(node, schema, group)
        try:
            typed = OmegaConf.merge(OmegaConf.structured(schema), node)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            msg = str(getattr(e, "msg", e)).splitlines()[0]
            raise DlrunError(f"{group}.{key}: {msg}") from None
        with open_dict(cfg):
            cfg[group] = typed
    t = cfg.trainer
    if t.smoke:  # experiments are merged after the trainer group; smoke must still win
        t.epochs, t.fast, t.checkpoint.enabled = 1, True, False
        t.limit_batches = min(t.limit_batches or SMOKE_BATCHES, SMOKE_BATCHES)
    if t.epochs < 1:
        raise DlrunError(f"trainer.epochs must be >= 1, got {t.epochs}")
    if t.batch_size < 1:
        raise DlrunError(f"trainer.batch_size must be >= 1, got {t.batch_size}")
    if not t.learning_rate > 0:
        raise DlrunError(f"trainer.learning_rate must be > 0, got {t.learning_rate}")
    if t.limit_batches is not None and t.limit_batches < 1:
        raise DlrunError(f"trainer.limit_batches must be >= 1 or null, got {t.limit_batches}")
    _choice("trainer.optimizer", t.optimizer, OPTIMIZERS)
    _choice("trainer.lr_schedule.name", t.lr_schedule.name, LR_SCHEDULES)
    _choice("trainer.loop", t.loop, LOOPS)
    _choice("trainer.precision", t.precision, PRECISIONS)
    if t.steps_per_execution < 1:
        raise DlrunError(f"trainer.steps_per_execution must be >= 1, got {t.steps_per_execution}")
    if cfg.strategy.gpu_index < 0:
        raise DlrunError(f"strategy.gpu_index must be >= 0, got {cfg.strategy.gpu_index}")
    if cfg.strategy.cpu_replicas < 1:
        raise DlrunError(f"strategy.cpu_replicas must be >= 1, got {cfg.strategy.cpu_replicas}")
    return cfg


def _choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise DlrunError(f"{key}: unknown value '{value}'", did_you_mean(value, choices))
