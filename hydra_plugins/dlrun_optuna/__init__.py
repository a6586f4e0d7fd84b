"""dlrun's Optuna sweeper for Hydra (`hydra/sweeper=dlrun_optuna`, used by `hparams_search=optuna`).

A Hydra Sweeper plugin (hydra.plugins.sweeper.Sweeper, found through the `hydra_plugins`
namespace package). Hydra imports every plugin module at start-up, so this file stays light:
the config schema and a thin class; the search itself is dlrun/optuna_sweep.py, which imports
Optuna only when a sweep runs. (No `from __future__ import annotations`: Hydra loads plugin
modules outside sys.modules, where dataclasses cannot resolve string annotations.)
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class DlrunOptunaConf:
    _target_: str = "hydra_plugins.dlrun_optuna.DlrunOptunaSweeper"
    _recursive_: bool = False  # sampler and pruner are built per worker (seeds differ), not by Hydra
    study_name: str = "dlrun"
    sweep_dir: str = "multirun/optuna/${hydra.sweeper.study_name}"  # stable: the same command finds its study
    storage: str | None = None  # None: sqlite:///<sweep dir>/optuna.db (an RDB url: shared by workers anywhere)
    direction: str = "auto"  # auto (the task's objective) | maximize | minimize
    metric: str = "auto"  # auto: the task's objective on validation data; or a per-epoch key (val_loss)
    n_trials: int = 20  # finished trials (complete, pruned, failed) the study stops at, over all runs
    n_jobs: int = 1  # worker processes sharing the study, each running one trial at a time
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: Any = None  # e.g. {_target_: optuna.pruners.MedianPruner, n_warmup_steps: 5}
    params: dict[str, Any] = field(default_factory=dict)  # key: choice(..) | interval(a,b) | tag(log, ..) | [..]
    enqueue: list[str] = field(default_factory=list)  # trials to run first: "key=value key=value" each
    heartbeat_interval: int = 60  # seconds; a trial silent for 3x this on another machine is failed
    worker: int = 0  # set by the sweep for the extra worker processes it starts


ConfigStore.instance().store(group="hydra/sweeper", name="dlrun_optuna", node=DlrunOptunaConf, provider="dlrun")


class DlrunOptunaSweeper(Sweeper):
    """Ask the study for a trial, run it through the launcher as job number = trial number, tell."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config = None
        self.launcher = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: list[str]) -> Any:
        from dlrun.optuna_sweep import sweep

        return sweep(self, arguments)
