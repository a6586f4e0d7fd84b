"""The tracking store, checked before MLflow touches it: a known URI scheme, a reachable server,
an SQLite file that is a database in a writable folder, and a new SQLite store created under a
lock (as a copy of an empty one). Store errors become one line naming the store."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def quiet_mlflow_logs() -> None:
    """Keep MLflow's and alembic's INFO chatter (store creation, new experiment) out of the terminal."""
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for other stores)."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri.split(":", 1)[1].lstrip("/")
    if uri.startswith("sqlite:////"):
        rest = "/" + rest
    return Path(rest.split("?", 1)[0])


def open_store(uri: str) -> None:
    """Check the tracking store before MLflow touches it, and create a new SQLite store under
    a file lock.

    MLflow creates and migrates a SQLite store on first use without a lock: two first runs in
    a fresh folder race ("duplicate column name") and both can die. Its errors for a bad URI,
    a file that is not a database or an unwritable folder are long tracebacks (or minutes of
    retries); each becomes one line naming the path or the URI here. A new store starts as a
    copy of an empty one (copy_empty_store).
    """
    from dlrun.errors import DlrunError

    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if "://" in uri or uri.startswith("sqlite:") else "file"
    if scheme not in SCHEMES:
        raise DlrunError(f"tracking.uri '{uri}': unknown store scheme '{scheme}'",
                         f"use one of {', '.join(s + '://' for s in SCHEMES)} (or drop it for ./mlflow.db)")
    check_reachable(uri)
    db = sqlite_path(uri)
    if db is None:
        return
    folder = db.resolve().parent
    if not folder.is_dir():
        raise DlrunError(f"tracking store folder '{folder}' does not exist", "create it or set tracking.uri")
    if db.exists():
        with open(db, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
        if head and head != SQLITE_MAGIC:
            raise DlrunError(f"'{db}' is not an SQLite database (MLflow store)",
                             "move it away, or set tracking.uri=sqlite:///other.db; dlrun never overwrites it")
        if not os.access(db, os.W_OK) or not os.access(folder, os.W_OK):
            raise DlrunError(f"tracking store '{db}' is not writable",
                             "run from a writable folder or set tracking.uri=sqlite:////writable/path/mlflow.db")
    elif not os.access(folder, os.W_OK):
        raise DlrunError(f"cannot create the tracking store '{db}': folder '{folder}' is not writable",
                         "run from a writable folder or set tracking.uri=sqlite:////writable/path/mlflow.db")
    import fcntl

    from mlflow.tracking import MlflowClient

    # A lock beside the store serialises its creation and migration (a process that sees the
    # file half-made would migrate it too); the second process waits, then finds the tables
    # there. MLflow caches the store per URI, so the later calls reuse it.
    with open(folder / f".{db.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not db.exists() and db.name != ":memory:" and "mode=memory" not in uri:
            copy_empty_store(db)
        with store_errors(uri):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def copy_empty_store(db: Path) -> None:
    """Start a new SQLite store as a copy of an empty store that MLflow built once (in the
    user's cache folder), instead of MLflow's ~60 schema migrations, each committed to disk:
    about a second of every first run in a new folder. MLflow then checks the copy's schema
    version and adds the folder's Default experiment as for any new store.

    The empty store is named by the MLflow version and its newest schema revision, so another
    MLflow (or a development copy with other migrations) builds its own; it is built under a
    unique temporary name and renamed into place whole, as is the copy beside `db` (the caller
    holds the store's lock), so two first runs at once, in one folder or two, each find whole
    files. A copy whose schema revision is not MLflow's newest is removed again. Anything going
    wrong here (no home, a read-only or full cache, MLflow internals renamed) leaves the store
    to MLflow, as before."""
    import secrets
    import shutil
    import sqlite3

    parts: list[Path] = []  # files being written: each is renamed into place whole, or removed
    try:
        import mlflow
        import sqlalchemy
        from mlflow.store.db.utils import _get_latest_schema_revision, _initialize_tables  # what MLflow runs

        head = _get_latest_schema_revision()
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlrun"
        template = cache / f"mlflow-{mlflow.__version__}-{head}-empty.db"
        unique = f"{os.getpid()}.{secrets.token_hex(4)}"  # one home shared by several hosts: pids repeat
        if not template.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            parts.append(cache / f".{template.name}.{unique}")
            engine = sqlalchemy.create_engine(f"sqlite:///{parts[-1]}")
            try:
                _initialize_tables(engine)
            finally:
                engine.dispose()
            os.replace(parts[-1], template)
        parts.append(db.with_name(f".{db.name}.{unique}"))
        shutil.copyfile(template, parts[-1])
        with contextlib.closing(sqlite3.connect(parts[-1])) as copy:
            (version,) = copy.execute("SELECT version_num FROM alembic_version").fetchone()
        if version != head:
            raise ValueError(f"{template} has schema {version}, not {head}")
        os.replace(parts[-1], db)
    except Exception:
        for part in parts:
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)


@contextlib.contextmanager
def store_errors(uri: str):
    """MLflow and database errors of the store as one line naming the store."""
    from dlrun.errors import DlrunError

    try:
        yield
    except DlrunError:
        raise
    except Exception as e:
        kind = type(e).__name__
        if kind not in ("MlflowException", "OperationalError", "DatabaseError", "IntegrityError",
                        "RestException", "ProgrammingError"):
            raise
        lines = [ln.strip() for ln in str(getattr(e, "message", e)).splitlines() if ln.strip()]
        first = lines[0] if lines else kind
        if first.startswith("(sqlite3."):
            first = first.split(")", 1)[-1].strip()
        hint = None
        if "deleted experiment" in first:  # MLflow's text says to restore or purge it, not how
            first = first.split(". ", 1)[0] + " (it is in the store's trash)"
            hint = ("log to another one: tracking.experiment=<name>, or restore it: mlflow experiments restore "
                    "--experiment-id <id>")
        raise DlrunError(f"tracking store {uri}: {first[:300]}", hint) from None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """An http(s) tracking URI must answer /health quickly: MLflow's own client would retry
    a dead server for minutes before failing."""
    import urllib.error
    import urllib.request

    from dlrun.errors import DlrunError

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered: a proxy or an older server without /health
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DlrunError(f"cannot reach the MLflow server at {uri}: {reason}",
                         "start it (mlflow server) or drop tracking.uri to use ./mlflow.db") from None
