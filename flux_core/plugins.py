"""The one Flux PluginManager: entry points of group ``flux`` plus built-in defaults.

Entry points load lazily, on first use, so ``import flux`` and ``flux --help`` stay
fast. ``FLUX_LOAD_PLUGINS=a,b`` limits which entry points load (empty string: none);
built-in defaults always load. A plugin that fails to import is reported by name
and skipped: one broken package never takes down the others. So is a plugin written for
a plugin API this core does not speak (:data:`PLUGIN_API_VERSION`). A hook implementation
that raises is reported by name too: ``plugin 'my-plugin' hook step_metrics failed:
ValueError: ...`` (a :class:`~flux_core.errors.FluxError` it raises on purpose passes
through unchanged).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from flux_core import hookspecs
from flux_core.errors import FluxError

ENTRY_POINT_GROUP = "flux"
DEFAULT_PLUGINS = ("flux_core.default_plugins", "flux_core.online.builtin_rewards")

# The plugin API (the names in flux_core.__all__ and the hook specifications) has a version of its own,
# apart from the distribution's. A plugin's entry-point module says which one it is written for
# (FLUX_PLUGIN_API = "1"), as a test suite names the pytest it needs in `minversion`, and core refuses,
# at load, one written for a version it does not speak, as pluggy refuses a hook implementation that
# matches no specification. A plugin that says nothing is taken as written for "1", the API as it was
# before it had a version.
PLUGIN_API_VERSION = "1"
SUPPORTED_PLUGIN_API_VERSIONS = frozenset({"1"})
PLUGIN_API_ATTRIBUTE = "FLUX_PLUGIN_API"


class FluxPluginManager(pluggy.PluginManager):
    """pluggy's PluginManager whose hook implementations name their plugin when they fail.

    Every non-wrapper hook implementation is wrapped when its plugin registers, so the
    same one-line error comes from ``pm.hook.<name>(...)`` calls and from core code that
    calls ``impl.function`` itself (the registries, ``step_metrics``).
    """

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        plugin_name = super().register(plugin, name)
        if plugin_name is not None:
            for caller in self.get_hookcallers(plugin) or ():
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                        # pluggy calls impl.function (argument names were read at registration).
                        impl.function = _naming_failures(impl.function, plugin_name, caller.name)  # type: ignore[misc]
        return plugin_name


def _naming_failures(function: Callable[..., Any], plugin_name: str, hook_name: str) -> Callable[..., Any]:
    """``function``, with any exception except a FluxError turned into a FluxError naming the plugin."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except FluxError:
            raise  # already a user-facing message
        except Exception as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            message = f"plugin '{plugin_name}' hook {hook_name} failed: {type(error).__name__}: {detail}"
            raise FluxError(message.rstrip(": ")) from error

    return call


pm = FluxPluginManager("flux")
pm.add_hookspecs(hookspecs)


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that could not be loaded."""

    name: str
    distribution: str
    error: str


failed_plugins: list[PluginFailure] = []
_loaded = False


def _allowed_entry_points() -> set[str] | None:
    value = os.environ.get("FLUX_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_plugins() -> pluggy.PluginManager:
    """Load built-in and installed plugins once; return the plugin manager."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)

    allowed = _allowed_entry_points()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and entry_point.name not in allowed:
            continue
        if pm.get_plugin(entry_point.name) is not None:
            continue
        distribution = entry_point.dist.name if entry_point.dist else "?"
        try:
            plugin = entry_point.load()
            incompatible = plugin_api_problem(plugin, entry_point)
            if incompatible is None:
                pm.register(plugin, name=entry_point.name)
        except Exception as error:  # a broken plugin must not break the others
            _skip(PluginFailure(entry_point.name, distribution, f"{type(error).__name__}: {error}"), "failed to load")
            continue
        if incompatible is not None:
            _skip(PluginFailure(entry_point.name, distribution, incompatible), "is incompatible")
    return pm


def plugin_api_problem(plugin: Any, entry_point: importlib.metadata.EntryPoint) -> str | None:
    """Why ``plugin`` (loaded from ``entry_point``) is written for a plugin API this core does not speak, or None."""
    declared = str(getattr(plugin, PLUGIN_API_ATTRIBUTE, "1"))
    if declared in SUPPORTED_PLUGIN_API_VERSIONS:
        return None
    from flux_core import DISTRIBUTION, __version__

    dist = entry_point.dist
    plugin_release = f"{dist.name} {dist.version}" if dist is not None else f"plugin '{entry_point.name}'"
    return (
        f"{plugin_release} is written for Flux plugin API {declared}, but {DISTRIBUTION} {__version__} speaks plugin "
        f"API {PLUGIN_API_VERSION}: install a {DISTRIBUTION} for plugin API {declared}, or a release of "
        f"{dist.name if dist is not None else 'the plugin'} for plugin API {PLUGIN_API_VERSION}"
    )


def _skip(failure: PluginFailure, what: str) -> None:
    failed_plugins.append(failure)
    print(
        f"flux: warning: plugin '{failure.name}' ({failure.distribution}) {what} and was skipped: {failure.error}",
        file=sys.stderr,
    )


def get_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager with every plugin loaded."""
    return load_plugins()


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its name, the distribution it came from and its version."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]


def list_plugins() -> list[PluginInfo]:
    """Every loaded plugin with its distribution, version and implemented hooks."""
    manager = get_plugin_manager()
    dist_of = {dist_name: (dist, version) for dist_name, dist, version in _entry_point_distributions()}
    infos = []
    for name, plugin in sorted(manager.list_name_plugin(), key=lambda item: item[0]):
        hooks = tuple(sorted(caller.name for caller in manager.get_hookcallers(plugin) or ()))
        dist, version = dist_of.get(name, (None, None))
        infos.append(PluginInfo(name=name, distribution=dist, version=version, hooks=hooks))
    return infos


def _entry_point_distributions():
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.dist is not None:
            yield entry_point.name, entry_point.dist.name, entry_point.dist.version
