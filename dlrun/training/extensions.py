"""Run extensions: something outside the task that wants callbacks in the training of the run
this process is about to make (an Optuna trial reporting each epoch and pruning).

An extension attaches itself for the length of a job (`with attached(ext):`) and is asked, when
the runner has opened the run, for its Keras callbacks (`ext.callbacks(objective, tracker)`).
The runner knows nothing of who attached what; `dlrun train` outside a sweep has none.
"""

from __future__ import annotations

import contextlib
from typing import Protocol


class Extension(Protocol):
    def callbacks(self, objective, tracker) -> list: ...


_attached: list[Extension] = []


@contextlib.contextmanager
def attached(extension: Extension):
    """`extension` takes part in the runs started inside the block (in this process)."""
    _attached.append(extension)
    try:
        yield extension
    finally:
        _attached.remove(extension)


def callbacks(objective, tracker) -> list:
    """The callbacks of every attached extension for a run with `objective`, logged by `tracker`."""
    return [cb for ext in list(_attached) for cb in ext.callbacks(objective, tracker)]
