"""The one registry, filled by the ``register_*`` hooks: algorithms, losses, rewards, data formats.

Each part is built on first use by calling its hook on every plugin. Registering the
same name twice is an error that names both plugins, so a clash never silently swaps
one implementation for another. Data formats are core's two
(:data:`flux_core.data.formats.BUILTIN_DATA_FORMATS`) and those algorithms define
(``Algorithm.data_format_spec``); the data pipeline asks :func:`get_data_format`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from flux_core.data.formats import BUILTIN_DATA_FORMATS, DataFormat
from flux_core.errors import DataError, FluxError, close_match
from flux_core.plugins import get_plugin_manager

# Algorithms that Flux publishes as separate distributions: a missing one gets a
# `pip install` hint instead of a bare "unknown algorithm".
KNOWN_ALGORITHM_PACKAGES = {
    "dpo": "flux-dpo",
    "grpo": "flux-grpo",
    "ppo": "flux-ppo",
    "kto": "flux-kto",
    "sft": "flux-sft",
    "reward_model": "flux-rm",
}


@dataclass(frozen=True)
class Algorithm:
    """A training algorithm contributed by a plugin.

    Attributes:
        name: what ``algorithm.name`` selects in YAML.
        config_schema: pydantic model validating the ``algorithm:`` block.
        runner: ``"module:attribute"`` of the runner class, imported only when a run
            starts so that listing plugins never imports torch or TRL.
        data_format: the ``data_format`` that ``FluxTrainer.fit`` accepts.
        trl_config: ``"module:attribute"`` of the TRL config class that the ``trl:``
            block is checked against, or ``None`` when the algorithm takes no ``trl:``.
        description: one line for ``flux plugins``.
        takes_losses: whether ``algorithm.loss`` picks from losses registered for it
            (``register_losses``); registering one for an algorithm that takes none is an error.
        evaluator: ``"module:attribute"`` of ``fn(config, checkpoint, dataset) -> metrics`` that
            ``flux eval`` uses for this algorithm's data, or ``None`` for the built-in reward-based
            evaluation of prompt data.
        data_format_spec: a ``flux_core.DataFormat`` named ``data_format`` that this plugin
            defines (core checks its columns generically); registered when the algorithm registers.
    """

    name: str
    config_schema: type
    runner: str
    data_format: str
    trl_config: str | None = None
    description: str = ""
    takes_losses: bool = False
    evaluator: str | None = None
    data_format_spec: Any = None

    def load_runner(self) -> type:
        return import_attribute(self.runner)

    def load_trl_config(self) -> type | None:
        return import_attribute(self.trl_config) if self.trl_config else None

    def load_evaluator(self) -> Callable[..., dict[str, Any]]:
        return import_attribute(self.evaluator)


@dataclass(frozen=True)
class Loss:
    """A named loss for one algorithm."""

    name: str
    fn: Callable[..., Any]
    algorithm: str
    plugin: str


@dataclass(frozen=True)
class Reward:
    """A named reward function for online algorithms."""

    name: str
    fn: Callable[..., Any]
    plugin: str


def import_attribute(path: str) -> Any:
    """The attribute a ``"module:attribute"`` string names, importing its module (plugins name code
    this way so that registering never imports torch or TRL)."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass
class Registry:
    """Every registered algorithm, loss, reward and data format, keyed by name."""

    algorithms: dict[str, Algorithm] = field(default_factory=dict)
    losses: dict[tuple[str, str], Loss] = field(default_factory=dict)
    rewards: dict[str, Reward] = field(default_factory=dict)
    data_formats: dict[str, DataFormat] = field(default_factory=lambda: dict(BUILTIN_DATA_FORMATS))
    _owners: dict[tuple[str, Any], str] = field(default_factory=dict)

    def _claim(self, kind: str, key: Any, plugin: str) -> None:
        owner = self._owners.get((kind, key))
        if owner is not None:
            raise FluxError(f"{kind} {key!r} is registered twice: by plugin '{owner}' and by plugin '{plugin}'")
        self._owners[(kind, key)] = plugin

    def owner(self, kind: str, key: Any) -> str | None:
        """The plugin that registered ``key`` of ``kind`` (``algorithm``, ``reward``, ``dpo loss``, ...)."""
        return self._owners.get((kind, key))

    def get_algorithm(self, name: str) -> Algorithm:
        if name in self.algorithms:
            return self.algorithms[name]
        package = KNOWN_ALGORITHM_PACKAGES.get(name)
        if package:
            raise FluxError(f"algorithm '{name}' is not installed: pip install {package}")
        installed = ", ".join(sorted(self.algorithms)) or "none"
        raise FluxError(
            f"unknown algorithm '{name}'{close_match(name, self.algorithms)}; installed algorithms: {installed}"
        )

    def get_loss(self, name: str, algorithm: str) -> Loss:
        loss = self.losses.get((algorithm, name))
        if loss is None:
            names = sorted(n for a, n in self.losses if a == algorithm)
            raise FluxError(
                f"unknown {algorithm} loss '{name}'{close_match(name, names)}; registered: {', '.join(names)}"
            )
        return loss

    def get_reward(self, name: str) -> Reward:
        reward = self.rewards.get(name)
        if reward is None:
            raise FluxError(
                f"unknown reward '{name}'{close_match(name, self.rewards)}; registered: {', '.join(sorted(self.rewards))}"
            )
        return reward

    def register_data_format(self, fmt: DataFormat, plugin: str) -> None:
        """Add a plugin's format (``Algorithm.data_format_spec``); a different format under a taken
        name is an error (the same one again is not: two algorithms may train on one format)."""
        known = self.data_formats.get(fmt.name)
        if known is not None and known != fmt:
            raise DataError(f"plugin '{plugin}' defines data_format '{fmt.name}', which is already defined differently")
        self.data_formats[fmt.name] = fmt

    def get_data_format(self, name: str) -> DataFormat:
        try:
            return self.data_formats[name]
        except KeyError:
            raise DataError(f"unknown data_format '{name}'; use one of: {', '.join(self.data_formats)}") from None


_registry: Registry | None = None


def get_registry() -> Registry:
    """The registry, built from every loaded plugin on first call."""
    global _registry
    if _registry is None:
        _registry = _build_registry()
    return _registry


def get_data_format(name: str) -> DataFormat:
    """The data format ``name``: core's own or one a registered algorithm defines."""
    return get_registry().get_data_format(name)


def reset_registry() -> None:
    """Forget the built registry (tests that register plugins on the fly call this)."""
    global _registry
    _registry = None


def _takes_losses(registry: Registry, algorithm: str, loss: str, plugin: str) -> bool:
    """Whether ``plugin``'s loss ``loss`` for ``algorithm`` can be used; raise when it never could.

    A loss for a Flux algorithm whose package is not installed is left out (it becomes
    usable once that package is installed); a misspelled or unknown algorithm, or one
    that takes no registered losses, is an error naming the plugin.
    """
    known = registry.algorithms.get(algorithm)
    if known is None:
        if algorithm in KNOWN_ALGORITHM_PACKAGES:
            return False
        raise FluxError(
            f"plugin '{plugin}' registers loss '{loss}' for unknown algorithm '{algorithm}'"
            f"{close_match(algorithm, registry.algorithms)}; installed: {', '.join(sorted(registry.algorithms))}"
        )
    if not known.takes_losses:
        raise FluxError(
            f"plugin '{plugin}' registers loss '{loss}' for '{algorithm}', which takes no registered losses"
        )
    return True


def _build_registry() -> Registry:
    registry = Registry()
    manager = get_plugin_manager()

    for impl in manager.hook.register_algorithms.get_hookimpls():

        def register(algorithm: Algorithm, _plugin=impl.plugin_name) -> None:
            registry._claim("algorithm", algorithm.name, _plugin)
            if algorithm.data_format_spec is not None:
                if algorithm.data_format_spec.name != algorithm.data_format:
                    raise FluxError(
                        f"plugin '{_plugin}': algorithm '{algorithm.name}' defines a data_format_spec "
                        f"named '{algorithm.data_format_spec.name}' but trains on '{algorithm.data_format}'"
                    )
                registry.register_data_format(algorithm.data_format_spec, _plugin)
            registry.algorithms[algorithm.name] = algorithm

        impl.function(register=register)

    for impl in manager.hook.register_losses.get_hookimpls():

        def register(name: str, fn: Callable[..., Any], *, algorithm: str | None = None, _plugin=impl.plugin_name):
            if algorithm is None:
                raise FluxError(
                    f"plugin '{_plugin}' registers loss '{name}' without naming its algorithm: "
                    f"call register('{name}', fn, algorithm=...) with the algorithm it is for"
                )
            if not _takes_losses(registry, algorithm, name, _plugin):
                return
            registry._claim(f"{algorithm} loss", name, _plugin)
            registry.losses[(algorithm, name)] = Loss(name=name, fn=fn, algorithm=algorithm, plugin=_plugin)

        impl.function(register=register)

    for impl in manager.hook.register_rewards.get_hookimpls():

        def register(name: str, fn: Callable[..., Any], _plugin=impl.plugin_name) -> None:
            registry._claim("reward", name, _plugin)
            registry.rewards[name] = Reward(name=name, fn=fn, plugin=_plugin)

        impl.function(register=register)

    return registry
