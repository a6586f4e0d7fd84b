"""The Optuna study shared by the workers of a search (optuna_sweep.py): the RDB storage with
heartbeats, Optuna's retry of interrupted trials, trials of vanished local processes failed at
once, the count of trials that count toward n_trials, the file lock that keeps count-then-ask
exact, and the heartbeat of a trial while its job runs."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

from dlrun.errors import DlrunError


def open_storage(url: str, heartbeat_interval: int):
    """RDB storage with heartbeats (a trial of a vanished process on another machine is failed)
    and, for SQLite, a long busy timeout (several workers write to one file)."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            with quiet_optuna():
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_interval,
                                                  grace_period=3 * heartbeat_interval,
                                                  heartbeat_stale_trial_callback=retry_callback())
        except Exception as e:
            # Two processes opening a new storage at once (workers started together on a shared
            # one, or anything reading the study while the sweep creates it) race to create its
            # tables ("table studies already exists", or the schema version row twice) and one
            # of them fails; opened again, it finds them made. Anything else (a bad URL, a
            # server that is down) is reported at once.
            text = str(e)
            racing = "already exists" in text or "UNIQUE constraint failed: alembic_version" in text
            if not racing or attempt == 4:
                raise DlrunError(f"hparams_search: cannot open the study storage {url}", text.splitlines()[0]) from None
            time.sleep(0.2 * (attempt + 1))


def retry_callback():
    """Optuna's RetryHeartbeatStaleTrialCallback (an interrupted trial's parameters are tried
    again first, the retry naming the trial it repeats)."""
    import optuna

    with quiet_optuna():
        return optuna.storages.RetryHeartbeatStaleTrialCallback()


@contextlib.contextmanager
def quiet_optuna():
    """Without Optuna's warnings about what dlrun uses on purpose: heartbeats and the retry
    callback are 'experimental', and heartbeats outside Study.optimize (dlrun asks for trials
    under its own lock and beats for them itself, see `heartbeat`)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def trial_id(storage, study, number: int) -> int:
    """The storage's id of trial `number` (what heartbeats and user attributes of a trial that is
    not this process's own are addressed by), through the storage's public lookups."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def fail_vanished(study, storage) -> None:
    """Trials left RUNNING by a process of this machine that no longer exists (Ctrl-C, SIGKILL,
    a crash) are failed as interrupted at once and tried again first, as Optuna's
    RetryHeartbeatStaleTrialCallback does for the trials of other machines whose heartbeat stopped."""
    import datetime

    import optuna

    host = socket.gethostname()
    old = datetime.datetime.now() - datetime.timedelta(seconds=60)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if "host" not in t.user_attrs:  # killed between ask and its attributes: orphaned once a minute old
            if t.datetime_start is None or t.datetime_start > old:
                continue
        elif t.user_attrs.get("host") != host or _alive(t.user_attrs.get("pid")):
            continue
        with contextlib.suppress(Exception):  # another worker may be failing it at the same moment
            storage.set_trial_user_attr(trial_id(storage, study, t.number), "interrupted",
                                        "its process ended without an answer")
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            retry_callback()(study, t)  # t: as it was, without "interrupted"
    with contextlib.suppress(Exception), quiet_optuna():
        optuna.storages.fail_stale_trials(study)


def _alive(pid) -> bool:
    if not pid or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counted(study) -> int:
    """Trials that count toward n_trials: finished ones (complete, pruned, failed with an error)
    and running ones (other workers'); not interrupted ones, not queued ones."""
    import optuna

    S = optuna.trial.TrialState
    return sum(t.state in (S.COMPLETE, S.PRUNED, S.RUNNING) or (t.state == S.FAIL and "error" in t.user_attrs)
               for t in study.get_trials(deepcopy=False))


@contextlib.contextmanager
def file_lock(path: Path):
    """Serialises count-then-ask between the workers of this machine (fcntl; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def heartbeat(storage, study, trial, interval: int):
    """Record the trial's heartbeat while its job runs (optuna does this only inside optimize(),
    which asks for trials without the lock that keeps the count of trials exact)."""
    done = threading.Event()
    tid = trial_id(storage, study, trial.number)

    def beat():
        while True:
            with contextlib.suppress(Exception):
                storage.record_heartbeat(tid)
            if done.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True, name="optuna-heartbeat")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
