"""Everything MLflow, in three parts: the run (`run`: Tracker, tracked_run), the store checked
before MLflow opens it (`store`), the datasets a run logs (`datasets`), and logging to an
existing run (`existing`, for dlrun eval / explain / export). The names below are the package's
public surface; importing it imports no MLflow."""

from dlrun.tracking.existing import log_to_existing_run
from dlrun.tracking.run import ERROR_TAG, Tracker, epoch_metric_name, flatten, git_commit, tracked_run
from dlrun.tracking.store import (
           check_reachable,
           copy_empty_store,
           open_store,
           quiet_mlflow_logs,
           store_errors,
)

__all__ = ["ERROR_TAG", "Tracker", "check_reachable", "copy_empty_store", "epoch_metric_name", "flatten",
           "git_commit", "log_to_existing_run", "open_store", "quiet_mlflow_logs", "store_errors", "tracked_run"]
