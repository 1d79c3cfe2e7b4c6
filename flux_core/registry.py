"""The one registry, filled by the ``register_*`` hooks: algorithms, losses, rewards, data formats.

Each part is built on first use by calling its hook on every plugin. Registering the
same name twice is an error that names both plugins, so a clash never silently swaps
one implementation for another. Data formats are core's two
(:data:`flux_core.data.formats.BUILTIN_DATA_FORMATS`) and those algorithms define
(``Algorithm.data_format_spec``); the data pipeline asks :func:`get_data_format`. Each algorithm
also names the metrics ``flux plot`` draws for it (``Algorithm.plot_panels``, :class:`PlotPanel`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from flux_core.data.formats import BUILTIN_DATA_FORMATS, DataFormat
from flux_core.errors import DataError, FluxError, close_match
from flux_core.plugins import failed_plugins, get_plugin_manager

# Algorithms that Flux publishes as separate distributions: a missing one gets a
# `pip install` hint instead of a bare "unknown algorithm".
KNOWN_ALGORITHM_PACKAGES = {
    "dpo": "flux-dpo",
    "grpo": "flux-grpo",
    "ppo": "flux-ppo",
    "kto": "flux-kto",
    "sft": "flux-sft",
    "reward_model": "flux-rm",
    "rloo": "flux-rloo",
    "orpo": "flux-orpo",
    "cpo": "flux-cpo",
    "online_dpo": "flux-online-dpo",
    "distill": "flux-distill",
}


@dataclass(frozen=True)
class PlotPanel:
    """One panel of ``flux plot``'s picture: a title, the step metrics drawn in it and its y-axis label.

    Metrics recorded at every step get faint points and a smoothed line; metrics recorded
    at a few steps only (``eval_*`` at save points) get their points joined. A panel none
    of whose metrics a run recorded is left out of that run's picture.
    """

    title: str
    metrics: tuple[str, ...]
    ylabel: str


# What every algorithm records (StepReporter, TRL's logs): the panels of an algorithm that declares none.
DEFAULT_PLOT_PANELS = (
    PlotPanel("loss", ("loss", "eval_loss"), "loss"),
    PlotPanel("gradient norm", ("grad_norm",), "L2 norm before clipping"),
    PlotPanel("learning rate", ("learning_rate",), "learning rate"),
    PlotPanel("throughput", ("tokens_per_second",), "tokens / second"),
)


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
        trl_relies_on: ``"module:attribute"`` of a tuple of :class:`flux_core.TRLReliance`: the pieces of
            TRL the runner and evaluator rely on, checked (:func:`flux_core.compat.check_trl`) before
            either is imported; ``None``: nothing to check.
        preview: ``"module:attribute"`` of ``fn(config, tokenizer, dataset) -> flux_core.TrainingView``:
            the rows tokenized as this algorithm's trainer tokenizes them, trained tokens marked
            (``flux data``), or ``None`` for the default view of the data's columns
            (:func:`flux_core.data.views.default_view`).
        plot_panels: the panels ``flux plot`` draws for this algorithm's runs (:class:`PlotPanel`; default
            :data:`DEFAULT_PLOT_PANELS`: loss, gradient norm, learning rate, throughput).
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
    trl_relies_on: str | None = None
    preview: str | None = None
    plot_panels: tuple[PlotPanel, ...] = DEFAULT_PLOT_PANELS

    def load_runner(self) -> type:
        self.check_trl()
        return import_attribute(self.runner)

    def load_trl_config(self) -> type | None:
        return import_attribute(self.trl_config) if self.trl_config else None

    def load_evaluator(self) -> Callable[..., dict[str, Any]]:
        self.check_trl()
        return import_attribute(self.evaluator)

    def check_trl(self) -> None:
        """Stop in one line if the installed TRL lacks a piece this algorithm relies on; warn once if
        TRL is outside the tested versions (see :mod:`flux_core.compat`)."""
        if self.trl_relies_on:
            from flux_core.compat import check_trl

            owner = KNOWN_ALGORITHM_PACKAGES.get(self.name, f"algorithm '{self.name}'")
            check_trl(import_attribute(self.trl_relies_on), owner=owner)

    def load_preview(self) -> Callable[..., Any]:
        """The function ``flux data`` tokenizes this algorithm's rows with (the default view without ``preview``)."""
        self.check_trl()
        return import_attribute(self.preview or "flux_core.data.views:default_view")


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
        skipped = [failure for failure in failed_plugins if package and failure.distribution == package]
        if skipped:
            raise FluxError(f"algorithm '{name}': its plugin ({package}) was skipped: {skipped[0].error}")
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
