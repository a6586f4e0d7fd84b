"""MLflow datasets for the DatasetRecords a task hands over (pandas or numpy rows, named after
their source): a file path or URI MLflow resolves, else a GeneratorSource carrying the spec of
generated or package-bundled data. Imported only when a run logs datasets (it imports MLflow)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import mlflow
from mlflow.data.dataset_source import DatasetSource


@contextlib.contextmanager
def no_integer_schema_warning():
    """MLflow warns, for every schema it infers from integer columns, that such a column cannot
    hold missing values. dlrun's served models take the user's rows as the run had them; the
    two lines say nothing the user can act on (and were printed on some paths, not others)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer.*")
        yield

def mlflow_dataset(rec):
    """An MLflow dataset for a DatasetRecord (pandas or numpy rows; a resolvable source or a spec)."""
    if rec.frame is None:
        return None
    if hasattr(rec.frame, "columns"):
        targets = rec.targets if rec.targets in rec.frame.columns else None
        return _try_source(lambda src: mlflow.data.from_pandas(rec.frame, source=src, name=rec.name,
                                                                targets=targets), rec.source)
    return _try_source(lambda src: mlflow.data.from_numpy(rec.frame, source=src, name=rec.name), rec.source)

def dataset_input(ds, context: str):
    """The run input of dataset `ds` in `context` (training, validation, testing, evaluation):
    what mlflow.log_input sends for the active run, built here for a run addressed by id."""
    from mlflow.entities import DatasetInput, InputTag

    return DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])


def _try_source(make, source: str):
    """Build an MLflow dataset with `source`: a file path or URI MLflow can resolve, else a
    GeneratorSource carrying the spec (generated and package-bundled data have no file)."""
    if not source:
        return make(None)
    if "://" in source or Path(source).exists():
        import warnings

        try:
            with warnings.catch_warnings():  # a local file matches two of MLflow's own resolvers
                warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
                return make(source)
        except Exception:  # MLflow has no resolver for this kind of URI
            pass
    return make(GeneratorSource(source))


class GeneratorSource(DatasetSource):
    """An MLflow DatasetSource for data made by code: its spec, e.g. 'dlrun:insurance?seed=42'."""

    def __init__(self, spec: str):
        self.spec = spec

    @staticmethod
    def _get_source_type() -> str:
        return "generator"

    def load(self):
        raise NotImplementedError(f"rebuild it with dlrun from the run's config ({self.spec})")

    @staticmethod
    def _can_resolve(raw_source) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source):
        return cls(str(raw_source))

    def to_dict(self) -> dict:
        return {"spec": self.spec}

    @classmethod
    def from_dict(cls, source_dict: dict):
        return cls(source_dict["spec"])
