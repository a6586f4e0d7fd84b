"""Name -> object registries filled by decorators (tasks, models, data sources, strategies).

Modules that register things import TensorFlow lazily (inside functions), so importing them
to list the names stays cheap.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dlrun.errors import DlrunError, did_you_mean


@dataclass
class Entry:
    name: str
    obj: Any
    description: str
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # e.g. the tasks a model or data source serves


class Registry:
    """A dict of named entries with aliases and a helpful error for unknown names."""

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group  # the config group whose option files hold the entries' values (configs/<group>/<name>.yaml)
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._serves: list[tuple[str, frozenset]] = []  # (task, tags): see `also_serves`

    def register(self, name: str, description: str = "", aliases=(), tags=()) -> Callable:
        def deco(obj):
            if name in self._entries or name in self._aliases:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            doc = description or ((obj.__doc__ or "").strip().splitlines() or [""])[0]
            if self.group and inspect.isfunction(obj):
                obj = self._filled(obj, name, (name, *aliases))
            self._entries[name] = Entry(name, obj, doc, tuple(aliases), self._with_served(tuple(tags)))
            for alias in aliases:
                self._aliases[alias] = name
            return obj

        return deco

    def _filled(self, fn, name: str, names: tuple) -> Callable:
        """`fn` called with its config node over its option file's values (configs/<group>/<name>.yaml),
        however it is called (Registry.build, or directly with a partial config, as tests and
        plugins do): the code reads keys, the YAML holds their values, once. A node naming
        another entry (a source handed the env config) is passed as it is."""
        group = self.group

        @functools.wraps(fn)
        def filled(node, *args, **kwargs):
            if hasattr(node, "keys") and hasattr(node, "get") and node.get("name", name) in names:
                from dlrun.config_tree import with_option_defaults

                node = with_option_defaults(group, node, name)
            return fn(node, *args, **kwargs)

        return filled

    def also_serves(self, task: str, tags) -> None:
        """Entries tagged with any of `tags` (registered before or after) also serve `task`:
        a task that reuses other tasks' sources (autoencoder: image and tabular data)."""
        self._serves.append((task, frozenset(tags)))
        for e in self._entries.values():
            e.tags = self._with_served(e.tags)

    def _with_served(self, tags: tuple) -> tuple:
        for task, kinds in self._serves:
            if tags and kinds & set(tags) and task not in tags:
                tags = (*tags, task)
        return tags

    def canonical(self, name: str) -> str:
        _load_all()
        name = str(name)
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise DlrunError(f"unknown {self.kind} '{name}'", did_you_mean(name, self.names(with_aliases=True)))

    def get(self, name: str) -> Any:
        return self._entries[self.canonical(name)].obj

    def entry(self, name: str) -> Entry:
        return self._entries[self.canonical(name)]

    def for_task(self, name: str, task: str) -> Entry:
        """The entry, checked to serve `task` (an untagged entry serves every task)."""
        entry = self.entry(name)
        if entry.tags and task not in entry.tags:
            fits = [e.name for e in self.entries() if not e.tags or task in e.tags]
            raise DlrunError(f"{self.kind} '{entry.name}' does not fit task '{task}'",
                             f"{self.kind}s for {task}: {', '.join(fits) or 'none'}")
        return entry

    def build(self, node, task: str, *args) -> Any:
        """Call the entry `node.name` (checked to serve `task`) with `node` (over its option
        file's values: see `_filled`), then `args`."""
        return self.for_task(node.name, task).obj(node, *args)

    def names(self, with_aliases: bool = False) -> list[str]:
        _load_all()
        names = list(self._entries)
        if with_aliases:
            names += list(self._aliases)
        return sorted(names)

    def entries(self) -> list[Entry]:
        _load_all()
        return [self._entries[n] for n in sorted(self._entries)]


TASKS = Registry("task", group="task")
MODELS = Registry("model", group="model")
DATA = Registry("data source", group="data")
STRATEGIES = Registry("strategy")
AGENTS = Registry("agent", group="agent")  # RL agents (dlrun/tasks/rl.py registers them; the classes load when built)

# Packages whose import fills the registries (each imports every module inside it).
REGISTRY_MODULES = (
    "dlrun.strategy",
    "dlrun.tasks",
    "dlrun.models",
    "dlrun.data",
)

_loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in REGISTRY_MODULES:
        importlib.import_module(mod)
