"""Methods from outside ftlab: entry points of installed packages and ``module:attr`` import paths.

Why a module of its own: every registry (adapters, importance scores, tasks) finds outside
methods the same way, so a researcher's package registers its methods by declaring entry points
(``[project.entry-points."ftlab.importance"] power = "mypkg.scores:POWER"``) and never edits
ftlab. A leaf: it imports no ftlab package but :mod:`ftlab.core.errors`.

Groups and what each entry point names:

- ``ftlab.adapters``: an :class:`ftlab.adapters.registry.AdapterSpec`;
- ``ftlab.importance``: an :class:`ftlab.sparsity.importance.ImportanceSpec`;
- ``ftlab.tasks``: a :class:`ftlab.data.task_base.Task` subclass (its ``name`` is the option);
- ``ftlab.schedules``: an :class:`ftlab.training.schedules.ScheduleSpec`;
- ``ftlab.loggers``: an :class:`ftlab.training.trainer.LoggerSpec`;
- ``ftlab.masks``: an :class:`ftlab.sparsity.methods.MaskMethodSpec` (``sparsity.method``);
- ``ftlab.structures``: an :class:`ftlab.sparsity.structures.StructureSpec` (``sparsity.structure``);
- ``ftlab.hardware``: an :class:`ftlab.hardware.targets.HardwareSpec` (``hardware.accelerator``);
- ``ftlab.conf``: a package holding ``<group>/<option>.yaml`` files (the methods' config options),
  stored in Hydra's ConfigStore so that ``adapter=toy`` composes like a built-in option.
"""

from __future__ import annotations

import dataclasses
import importlib
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from ftlab.core.errors import ConfigError, FtlabError

GROUPS = ("ftlab.adapters", "ftlab.importance", "ftlab.tasks", "ftlab.schedules", "ftlab.loggers", "ftlab.conf",
          "ftlab.masks", "ftlab.structures", "ftlab.hardware")

_loaded: dict[str, list[tuple[str, Any]]] = {}

S = TypeVar("S")


class PluginError(FtlabError):
    """An installed package's entry point that does not load (one line naming it)."""


def load_entry_points(group: str) -> list[tuple[str, Any]]:
    """``[(entry point name, loaded object)]`` of every installed distribution's entry points in
    ``group``, loaded once per process (a registry calls this before each lookup)."""
    if group not in GROUPS:
        raise ValueError(f"unknown entry-point group {group!r}; one of {list(GROUPS)}")
    if group not in _loaded:
        found = []
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                found.append((ep.name, ep.load()))
            except Exception as err:  # any import-time failure of someone else's package: one line
                raise PluginError(f"entry point {group}:{ep.name} = {ep.value} does not load: "
                                  f"{type(err).__name__}: {err}") from err
        _loaded[group] = found
    return _loaded[group]


def is_import_path(name: str) -> bool:
    """``pkg.module:attr`` names an object by import path (registered names never hold a colon)."""
    return isinstance(name, str) and ":" in name


def import_object(path: str, key: str) -> Any:
    """The object ``pkg.module:attr`` names; a one-line :class:`ConfigError` on ``key`` when the
    module or attribute does not exist."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(key, path, "a registered name or an import path module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(key, path, f"an importable module ({err})") from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(key, path, f"an attribute of module {module_name} ({part!r} is not one)")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[S]):
    """``name -> spec`` of one extension point, with the specs installed packages declare under
    its entry-point group. Every registry (adapters, importance scores, schedules, loggers) is one
    of these, so registration, plugin loading and the one-line error for an unknown name behave
    the same everywhere; a module exposes its registry's :meth:`register`, :meth:`all` and
    :meth:`get` (or :meth:`resolve`) under its own names instead of wrapping them.

    ``import_paths``: a config option may also name a spec by import path (``pkg.mod:SPEC``, for a
    quick experiment without a package); :meth:`resolve` accepts those. ``builtin_modules``:
    modules in higher packages that register built-in specs (a launcher's own hardware target),
    imported on the first lookup so that no lower package has to import them. ``also``: what
    else the config key accepts, for the one-line error. ``classes``: a spec is a subclass of
    ``spec_type`` whose class attributes are its flags (tasks: the class is also what builds one)."""

    def __init__(self, what: str, key: str, spec_type: type, group: str, *, import_paths: bool = False,
                 builtin_modules: tuple[str, ...] = (), also: str = "", classes: bool = False):
        self.what, self.key, self.spec_type, self.group = what, key, spec_type, group
        self.classes = classes
        self.import_paths, self.builtin_modules = import_paths, builtin_modules
        self.also = also + (f", or an import path module:{spec_type.__name__}" if import_paths else "")
        self._specs: dict[str, S] = {}
        self._builtins_loaded = False

    def register(self, spec: S) -> S:
        """Add ``spec`` under ``spec.name`` (the same object twice is a no-op; two objects, an error)."""
        name = spec.name
        if name in self._specs and self._specs[name] is not spec:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._specs[name] = spec
        return spec

    def _load_plugins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for module in self.builtin_modules:
                importlib.import_module(module)
        for name, spec in load_entry_points(self.group):
            if not self.is_spec(spec):
                raise ConfigError(self.key, name, f"an entry point ({self.group}) naming a {self.spec_type.__name__}")
            if self._specs.get(spec.name, spec) is not spec:  # an installed package's spec named like another
                raise ConfigError(self.key, spec.name, f"one {self.what} per name (the entry point {name!r} of "
                                                       f"{self.group} names a second {spec.name!r})")
            self.register(spec)

    def is_spec(self, obj: Any) -> bool:
        if self.classes:
            return isinstance(obj, type) and issubclass(obj, self.spec_type)
        return isinstance(obj, self.spec_type)

    def all(self) -> list[S]:
        self._load_plugins()
        return list(self._specs.values())

    def find(self, name: str) -> S | None:
        self._load_plugins()
        return self._specs.get(name)

    def get(self, name: str) -> S:
        """The spec of ``name``; one line on :attr:`key` naming the registered ones otherwise."""
        spec = self.resolve(name) if self.import_paths else self.find(name)
        if spec is None:
            raise ConfigError(self.key, name, f"one of {sorted(self._specs)}{self.also}")
        return spec

    def resolve(self, name: str) -> S | None:
        """The spec of a registered name, or (``import_paths``) of an import path ``pkg.module:SPEC``,
        registered under that path on first use so that later lookups and messages see it; None
        for an unknown registered name. An import path that does not name a spec fails in one line."""
        found = self.find(name)
        if found is not None or not (self.import_paths and is_import_path(name)):
            return found
        spec = import_object(name, self.key)
        if not isinstance(spec, self.spec_type):
            raise ConfigError(self.key, name, f"an import path whose object is a {self.spec_type.__name__}")
        return self.register(dataclasses.replace(spec, name=name))
