"""tf.distribute strategy, precision policy and device set-up from the `strategy` config.

Logical CPU devices must be configured before TensorFlow initialises its runtime, so
`make_strategy` is called once, early, before any tensor is created.
"""

from __future__ import annotations

import contextlib
import json
import os

from dlrun.errors import DlrunError
from dlrun.registry import STRATEGIES


def _gpus():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _split_cpu(n: int) -> list[str]:
    """Split the physical CPU into n logical devices; returns their names."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    if n > 1:
        with contextlib.suppress(RuntimeError):
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < n:
        raise DlrunError(
            f"strategy.cpu_replicas={n} but TensorFlow already started with {len(logical)} CPU device(s)",
            "set it in a fresh process",
        )
    return [d.name for d in logical[:n]]


def _memory_growth(cfg) -> None:
    import tensorflow as tf

    if cfg.memory_growth:
        for gpu in _gpus():
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)


def _single_device():
    """TensorFlow's default strategy: one device (the GPU if visible, else the CPU).

    Used instead of OneDeviceStrategy because Keras then skips the distributed input
    pipeline, which costs several times the step time of a small model.
    """
    import tensorflow as tf

    return tf.distribute.get_strategy()


@STRATEGIES.register("auto", "Mirrored over all GPUs if >1, one GPU if 1, else CPU")
def _auto(cfg):
    import tensorflow as tf

    gpus = _gpus()
    _memory_growth(cfg)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if cfg.cpu_replicas > 1 and not gpus:
        return tf.distribute.MirroredStrategy(devices=_split_cpu(cfg.cpu_replicas))
    return _single_device()


@STRATEGIES.register("cpu", "CPU only (GPUs hidden)")
def _cpu(cfg):
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):
        tf.config.set_visible_devices([], "GPU")
    if cfg.cpu_replicas > 1:
        return tf.distribute.MirroredStrategy(devices=_split_cpu(cfg.cpu_replicas))
    return _single_device()


@STRATEGIES.register("gpu", "One GPU (strategy.gpu_index)")
def _gpu(cfg):
    import tensorflow as tf

    gpus = _gpus()
    if not gpus:
        raise DlrunError("strategy=gpu but TensorFlow sees no GPU on this machine",
                         "use strategy=auto or strategy=cpu")
    if cfg.gpu_index >= len(gpus):
        raise DlrunError(f"strategy.gpu_index={cfg.gpu_index} but only {len(gpus)} GPU(s) are visible")
    with contextlib.suppress(RuntimeError):  # only the chosen GPU stays visible; it becomes /gpu:0
        tf.config.set_visible_devices([gpus[cfg.gpu_index]], "GPU")
    _memory_growth(cfg)
    return _single_device()


@STRATEGIES.register("mirrored", "Synchronous data parallel on one machine (GPUs, devices list or CPU replicas)")
def _mirrored(cfg):
    import tensorflow as tf

    if cfg.devices:
        devices = tuple(cfg.devices)
    elif cfg.cpu_replicas > 1:
        devices = tuple(_split_cpu(cfg.cpu_replicas))
    else:
        _memory_growth(cfg)
        devices = None if _gpus() else ("/cpu:0",)
    # One strategy per device set and process: the jobs of a sweep (and in-process tests) run
    # one after another in one process, and a second MirroredStrategy numbers its collective
    # ops from the same instance keys as the first, so TF's runtime matches a new model's
    # gradient all-reduce against the old model's shapes ("Shape mismatch in the collective
    # instance"). Reusing the strategy keeps its keys counting on.
    if devices not in _MIRRORED:
        _MIRRORED[devices] = tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    return _MIRRORED[devices]


_MIRRORED: dict = {}


@STRATEGIES.register("multi_worker", "MultiWorkerMirroredStrategy from TF_CONFIG or SLURM")
def _multi_worker(cfg):
    import tensorflow as tf

    impl = {
        "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
        "ring": tf.distribute.experimental.CommunicationImplementation.RING,
        "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
    }
    if cfg.communication not in impl:
        raise DlrunError(f"strategy.communication: unknown value '{cfg.communication}'", "valid: auto, nccl, ring")
    options = tf.distribute.experimental.CommunicationOptions(implementation=impl[cfg.communication])
    if cfg.cluster_resolver == "slurm":
        if "SLURM_JOB_ID" not in os.environ:
            raise DlrunError("strategy.cluster_resolver=slurm but this is not a SLURM job (no SLURM_JOB_ID)")
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
    elif cfg.cluster_resolver == "tf_config":
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    else:
        raise DlrunError(f"strategy.cluster_resolver: unknown value '{cfg.cluster_resolver}'",
                         "valid: slurm, tf_config")
    _memory_growth(cfg)
    return _multi_worker_class()(cluster_resolver=resolver, communication_options=options)


def _multi_worker_class():
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3 hands it.

    Keras 3's `fit` (keras-team/keras#20585, TF 2.16+) fails under this strategy in two places:
    before the first step it calls `strategy.reduce("MEAN", batch)` on the whole nested data
    batch, and after each step it reduces the scalar logs with `axis=0`; TF's collective
    strategy reduces one value at a time and has no axis 0 on a scalar. Reducing each leaf of a
    structure, and a scalar over the replicas only, is what both calls mean. Subclassed rather
    than patched, so only the strategy dlrun built behaves differently.
    """
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis=None):
            if isinstance(value, tuple | list | dict):
                return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
            if axis is not None:
                local = (self.experimental_local_results(value)[0]
                         if isinstance(value, tf.distribute.DistributedValues) else value)
                if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                    axis = None
            return super().reduce(reduce_op, value, axis)

    return MultiWorkerMirroredStrategy


@STRATEGIES.register("tpu", "TPUStrategy (strategy.tpu address or local)")
def _tpu(cfg):
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=cfg.tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise DlrunError(f"strategy=tpu but no TPU could be reached: {str(e).splitlines()[0]}") from None
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(strategy_cfg):
    """Build the strategy named by strategy_cfg.name."""
    return STRATEGIES.get(strategy_cfg.name)(strategy_cfg)


def evaluation_scope(strategy):
    """The scope the served model is built in after training: the strategy's, except across
    workers, where each process evaluates on its own copy of the (identical) weights. Under
    the multi-worker strategy Keras' predict gathers the outputs of all workers through
    collective ops, which cannot carry the served model's string outputs (class names)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return contextlib.nullcontext()
    return strategy.scope()


def set_precision(precision: str) -> None:
    import keras

    keras.mixed_precision.set_global_policy(precision)


def non_chief_worker(args: list[str], env=None) -> bool:
    """Whether this process is a non-chief worker of a `strategy=multi_worker` command, told
    from TF_CONFIG or SLURM before Hydra creates a run folder (the same rule as
    runner.is_chief: the chief, or worker 0 when the cluster has no chief, logs and saves)."""
    env = os.environ if env is None else env
    if "strategy=multi_worker" not in args:
        return False
    if "strategy.cluster_resolver=slurm" in args:
        return env.get("SLURM_PROCID", "0") != "0"
    try:
        tf_config = json.loads(env.get("TF_CONFIG") or "{}")
        task, cluster = tf_config.get("task") or {}, tf_config.get("cluster") or {}
        kind, index = task.get("type"), int(task.get("index") or 0)
    except (ValueError, TypeError, AttributeError):
        return False  # the resolver reports a bad TF_CONFIG in its own words
    if kind is None or kind == "chief":
        return False
    return kind != "worker" or index != 0 or "chief" in cluster


def worker_run_dir(args: list[str]) -> list[str]:
    """Overrides that send a non-chief worker's Hydra run folder to a temporary folder (removed
    at exit): workers log nothing and save nothing, and on a shared file system their folders
    would sit beside the chief's. [] for every other process, or when hydra.run.dir is given."""
    if not non_chief_worker(args) or any(a.startswith("hydra.run.dir=") for a in args):
        return []
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="dlrun-worker-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return [f"hydra.run.dir={folder}", "hydra.output_subdir=null"]


def worker_count(strategy) -> int:
    """How many processes train together: the chief and workers of a multi-worker cluster, else 1."""
    import tensorflow as tf

    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return 1
    try:
        spec = resolver.cluster_spec()
        return max(1, sum(spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker")))
    except Exception:  # a resolver without a cluster (local run): one process
        return 1


def describe(strategy) -> dict:
    """Facts about the strategy for logging: name, replicas, workers (processes training
    together: >1 only across machines), devices of this process."""
    import tensorflow as tf

    default = not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy()
    if default:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [(gpus or tf.config.list_logical_devices("CPU"))[0].name]
    else:
        devices = list(strategy.extended.worker_devices)
    return {
        "strategy": "SingleDevice" if default else type(strategy).__name__,
        "workers": worker_count(strategy),
        "replicas": int(strategy.num_replicas_in_sync),
        "devices": ",".join(devices),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }
