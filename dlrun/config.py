"""Typed schema for the shared config groups (trainer, tracking, strategy, env).

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
    mode: str = "auto"  # auto | min | max


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "auto"  # auto = the task's objective on validation data (val_accuracy, val_rmse, ...)
    mode: str = "auto"  # auto (the objective's, a loss, or a known metric's direction) | min | max
    patience: int = 10
    min_delta: float = 0.0
    restore_best_weights: bool = True


@dataclass
class CheckpointConfig:
    enabled: bool = True  # keep the best model of the run (by monitor) on disk
    monitor: str = "auto"  # auto = the task's objective on validation data
    mode: str = "auto"  # auto | min | max
    evaluate: str = "best"  # best | last: which weights the test report and the served model use
    min_interval_s: float = 30.0  # write at most this often; the best state is always written at the end


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 32  # per replica; global batch = batch_size * replicas
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9  # sgd and rmsprop
    weight_decay: float = 0.004  # adamw
    beta_1: float = 0.9  # adam, adamw: decay of the first moment (GANs train steadier at 0.5)
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
    fast: bool = False  # tasks use a tiny subset of their data (trainer=smoke)
    fast_examples: int = 128  # examples kept per split when fast
    smoke: bool = False  # trainer=smoke: forces the smoke settings over any experiment's values
    progress: bool = True
    backup: bool = True  # keep a backup in the run folder to resume from (training/backup.py)
    backup_interval_s: float = 30.0  # at most this often (0: every epoch)
    resume: str | None = None  # a run folder, an MLflow run id, or auto (the last unfinished run of this command)


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
    system_metrics: bool = True  # MLflow's system metrics (CPU, memory; GPU with pynvml)
    system_metrics_interval: float = 10.0  # seconds between samples
    parent_run_id: str | None = None  # start the run as a child of this one (sweep jobs)


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


@dataclass
class EnvConfig:
    """An RL environment (task=rl): any gymnasium id, dlrun's own included (configs/env/*.yaml)."""

    id: str = "???"
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make
    num_envs: int = 1  # training envs stepped together (gymnasium.vector)
    vector: str = "sync"  # sync | async
    obs_scale: float = 1.0  # observations are divided by this inside the network
    normalize_obs: bool = False  # running mean/std layer in the network (saved, served on raw observations)
    normalize_reward: bool = False  # gymnasium NormalizeReward on the training envs


SCHEMAS: dict[str, type] = {
    "trainer": TrainerConfig,
    "tracking": TrackingConfig,
    "strategy": StrategyConfig,
}


def register_resolvers() -> None:
    """`${dlrun_uid:}`: a short random id, the same for every use within one config (cached),
    so the run folder outputs/<date>/<time>-<id> is unique even for runs started together."""
    import secrets

    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("dlrun_uid"):
        OmegaConf.register_new_resolver("dlrun_uid", lambda: secrets.token_hex(3), use_cache=True)


def register_schemas() -> None:
    """Register the schema dataclasses in Hydra's ConfigStore (group 'schema') and dlrun's resolvers."""
    from hydra.core.config_store import ConfigStore

    register_resolvers()
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

    fill_option_defaults(cfg)
    schemas = dict(SCHEMAS, **({"env": EnvConfig} if cfg.get("env") is not None else {}))  # env: RL runs only
    for group, schema in schemas.items():
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
        t.epochs, t.fast, t.checkpoint.enabled, t.backup = 1, True, False, False
        t.limit_batches = min(t.limit_batches or SMOKE_BATCHES, SMOKE_BATCHES)
    if t.epochs < 1:
        raise DlrunError(f"trainer.epochs must be >= 1, got {t.epochs}")
    if t.batch_size < 1:
        raise DlrunError(f"trainer.batch_size must be >= 1, got {t.batch_size}")
    if not t.learning_rate > 0:
        raise DlrunError(f"trainer.learning_rate must be > 0, got {t.learning_rate}")
    if not 0 <= t.beta_1 < 1:
        raise DlrunError(f"trainer.beta_1 must be in [0, 1), got {t.beta_1}")
    if t.limit_batches is not None and t.limit_batches < 1:
        raise DlrunError(f"trainer.limit_batches must be >= 1 or null, got {t.limit_batches}")
    _choice("trainer.optimizer", t.optimizer, OPTIMIZERS)
    _choice("trainer.lr_schedule.name", t.lr_schedule.name, LR_SCHEDULES)
    _choice("trainer.loop", t.loop, LOOPS)
    _choice("trainer.precision", t.precision, PRECISIONS)
    _choice("trainer.checkpoint.evaluate", t.checkpoint.evaluate, ("best", "last"))
    for key, node in (("checkpoint", t.checkpoint), ("early_stopping", t.early_stopping),
                      ("lr_schedule", t.lr_schedule)):
        _choice(f"trainer.{key}.mode", node.mode, ("auto", "min", "max"))
    if t.steps_per_execution < 1:
        raise DlrunError(f"trainer.steps_per_execution must be >= 1, got {t.steps_per_execution}")
    if cfg.get("env") is not None:
        _choice("env.vector", cfg.env.vector, ("sync", "async"))
        if cfg.env.num_envs < 1:
            raise DlrunError(f"env.num_envs must be >= 1, got {cfg.env.num_envs}")
    if cfg.strategy.gpu_index < 0:
        raise DlrunError(f"strategy.gpu_index must be >= 0, got {cfg.strategy.gpu_index}")
    if cfg.strategy.cpu_replicas < 1:
        raise DlrunError(f"strategy.cpu_replicas must be >= 1, got {cfg.strategy.cpu_replicas}")
    from dlrun.sweep import gpus_per_job  # the sweep's GPU pool (a Hydra callback cannot fail a job)

    gpus_per_job(cfg)
    check_values(cfg)
    return cfg


def fill_option_defaults(cfg) -> None:
    """Under each named group (model, data, task, agent) put its option file's values
    (config_tree.option_defaults) beneath what the config gives: a preset that names another
    model, a run logged before a key existed, or a config written by hand get every key the code
    reads, with the value written once, in the option's YAML. Composed from that same option
    file, the group already has them all and nothing changes.

    An unknown name in one of them is the registry's one-line error, before anything starts.
    """
    from omegaconf import DictConfig, open_dict

    from dlrun.config_tree import option_defaults, with_option_defaults
    from dlrun.registry import AGENTS, DATA, MODELS, TASKS

    for registry in (TASKS, MODELS, DATA, AGENTS):
        node = cfg.get(registry.group)
        if isinstance(node, DictConfig) and node.get("name"):
            name = registry.canonical(node.name)
            filled = with_option_defaults(registry.group, node, name)
            if filled is not node:
                with open_dict(cfg):
                    cfg[registry.group] = filled
            check_types(filled, option_defaults(registry.group, name), registry.group, f"{registry.group}={name}")


# The option file is the schema of its group: a value of another kind than the file's is one line
# naming the key (model.units=abc, data.noise=[1]). Kinds, from the file's value: a bool takes a
# bool; a number takes a number; a text takes a text or a number (choices such as season: auto | 12);
# a list takes a list or one item; a mapping is checked key by key. null in the file, or set by
# the user, takes anything (null switches an option off or asks for the automatic choice), and a
# bool or a number also takes `auto` (a task may leave the choice to the data: residual: auto);
# data.cache also takes a folder.
BOOL_OR_PATH = frozenset({"cache"})  # true, false, or a folder to cache in (data.cache)
_KINDS = {bool: "true or false", int: "a number", float: "a number", str: "a text", list: "a list"}


def check_types(node, schema: dict, path: str, option: str) -> None:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    for key, default in schema.items():
        if key not in node or OmegaConf.is_missing(node, key) or default is None or default == "???":
            continue
        value = node[key]
        if value is None:
            continue
        full = f"{path}.{key}"
        if isinstance(default, dict):
            if isinstance(value, DictConfig):
                check_types(value, default, full, option)
                continue
            ok = False
        elif isinstance(default, bool):
            ok = isinstance(value, bool) or value == "auto" or (key in BOOL_OR_PATH and isinstance(value, str))
        elif isinstance(default, int | float):
            ok = _is_number(value) or value == "auto"
        elif isinstance(default, str):
            ok = isinstance(value, str) or _is_number(value)
        elif isinstance(default, list):
            ok = not isinstance(value, DictConfig | bool)
        else:
            ok = True
        if not ok:
            kind = "a mapping" if isinstance(default, dict) else _KINDS.get(type(default), type(default).__name__)
            shown = _show(value) if not isinstance(value, DictConfig | ListConfig) else str(OmegaConf.to_container(value))
            raise DlrunError(f"{full} must be {kind}, got {shown}",
                             f"{option} sets {key}: {_show(default) if not isinstance(default, dict) else '{...}'}")


# Value rules by key name for the free-form groups (model, task, data), so that every model
# and task, including ones added later, gets one-line errors naming the key instead of a
# traceback from deep inside Keras. A rule applies wherever its key appears; null is allowed.
SIZES = frozenset({"hidden_units", "units", "filters", "dense_units", "latent_units", "encoder_units",
                   "decoder_units", "embedding_dim", "latent_dim", "ff_dim", "key_dim", "num_heads", "heads"})
COUNTS = frozenset({"layers", "num_layers", "blocks", "convs_per_block", "blocks_per_stage", "kernel_size",
                    "pool_size", "window", "horizon", "stride", "n_samples", "length", "max_tokens",
                    "sequence_length", "num_envs"})
AUTO_COUNTS = frozenset({"sequence_length"})  # counts a task may also derive from the data ("auto")
FRACTIONS = frozenset({"test_size", "val_size", "validation_split", "test_split"})


def check_values(cfg) -> None:
    """Typed checks of the model/task/data groups by key name (SIZES, COUNTS, dropouts, FRACTIONS)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    def walk(node, path):
        for key in node:
            full = f"{path}.{key}"
            if OmegaConf.is_missing(node, key):
                continue
            v = node[key]
            if isinstance(v, DictConfig):
                walk(v, full)
                continue
            if v is None:
                continue
            k = str(key)
            if k in SIZES:
                items = list(v) if isinstance(v, ListConfig | list | tuple) else [v]
                if not items and k != "hidden_units" and k != "dense_units":
                    raise DlrunError(f"{full} is empty", "give at least one size")
                if not all(_is_int(i) and int(i) >= 1 for i in items):
                    raise DlrunError(f"{full} must be a positive integer or a list of them, got {_show(v)}",
                                     f"e.g. {full}=[64,32]" if k.endswith("units") else f"e.g. {full}=64")
            elif k in COUNTS and not (k in AUTO_COUNTS and v == "auto"):
                items = list(v) if isinstance(v, ListConfig | list | tuple) else [v]
                if not all(_is_int(i) and int(i) >= 1 for i in items):
                    raise DlrunError(f"{full} must be an integer >= 1, got {_show(v)}")
            elif k.endswith("dropout"):
                if not (_is_number(v) and 0.0 <= float(v) < 1.0):
                    raise DlrunError(f"{full} must be a number in [0, 1), got {_show(v)}")
            elif k in FRACTIONS and _is_number(v) and isinstance(v, float) and not 0.0 <= v < 1.0:
                raise DlrunError(f"{full} must be a fraction in [0, 1), got {_show(v)}")

    for group in ("model", "task", "data"):
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            walk(node, group)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _show(v) -> str:
    from omegaconf import ListConfig

    return str(list(v)) if isinstance(v, ListConfig) else repr(v) if isinstance(v, str) else str(v)


def _choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise DlrunError(f"{key}: unknown value '{value}'", did_you_mean(value, choices))
