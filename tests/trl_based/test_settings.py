"""No silent `trl:` overrides: every TRL config field that Flux sets from its own keys is refused in `trl:`.

The fields Flux writes are not typed here: each installed algorithm's runner builds its TRL
trainer on the tiny model while the TRL config class records the keyword arguments it is
constructed with, and TRL itself says which other fields move one of those (aliases such as
``activation_checkpointing``). A new field in a runner, a new algorithm or a TRL upgrade
that adds an alias makes these tests fail until the field is refused.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
from make_preferences import make_pairs
from make_prompts import make_prompts

from flux_core.config import FluxConfig
from flux_core.data.load import load_data
from flux_core.errors import ConfigError
from flux_core.registry import get_registry

# The algorithm keys an installed algorithm needs beyond its name, for a tiny run.
REQUIRED_KEYS = {
    "grpo": {
        "num_generations": 2,
        "max_completion_length": 8,
        "rewards": [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}],
    },
    "rloo": {
        "num_generations": 2,
        "max_completion_length": 8,
        "rewards": [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}],
    },
    "online_dpo": {"max_completion_length": 8, "rewards": [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}]},
    "distill": {"max_completion_length": 8, "teacher": "MODEL"},  # MODEL: the run's model directory
}


def trl_algorithms() -> list[str]:
    return sorted(name for name, algorithm in get_registry().algorithms.items() if algorithm.trl_config)


def flux_config(algorithm: str, tmp_path, model_dir=None, **top) -> FluxConfig:
    data = {
        "model_path": str(model_dir or "m"),
        "output_dir": str(tmp_path / "outputs"),
        "num_steps": 2,
        "batch_size": 4,
        "max_length": 64,
        "gradient_checkpointing": True,  # the non-default value, so fields TRL derives from it move too
        "algorithm": {
            "name": algorithm,
            **{
                key: str(model_dir or "m") if value == "MODEL" else value
                for key, value in REQUIRED_KEYS.get(algorithm, {}).items()
            },
        },
        **top,
    }
    return FluxConfig.from_dict(data)


def training_data(data_format: str):
    if data_format == "prompts":
        return load_data(make_prompts(8, seed=0), "prompts")
    return load_data(make_pairs(8, seed=0), data_format)  # every offline format takes preference pairs


def fields_flux_writes(algorithm_name: str, tmp_path, model_dir, monkeypatch) -> tuple[type, dict]:
    """The TRL config class of ``algorithm_name`` and the keyword arguments its runner built it with."""
    algorithm = get_registry().get_algorithm(algorithm_name)
    trl_class = algorithm.load_trl_config()
    written: dict = {}
    construct = trl_class.__init__

    def recording_init(self, *args, **kwargs):
        written.update(kwargs)
        construct(self, *args, **kwargs)

    monkeypatch.setattr(trl_class, "__init__", recording_init)
    config = flux_config(algorithm_name, tmp_path, model_dir)
    runner = algorithm.load_runner()(config, show_progress=False)
    runner.build_trainer(training_data(algorithm.data_format), None, [])
    monkeypatch.setattr(trl_class, "__init__", construct)
    assert written, f"{algorithm_name}'s runner built no {trl_class.__name__}"
    return trl_class, written


def other_values(annotation, default) -> list:
    """Valid values other than ``default`` for a bool or number field; none for other types."""
    leaves = set(typing.get_args(annotation)) or {annotation}
    if bool in leaves:
        return [value for value in (True, False) if value is not default]
    if int in leaves and isinstance(default, int):
        return [default + 2]
    if float in leaves and isinstance(default, (int, float)):
        return [default + 0.5]
    return []


def aliases_of(trl_class: type, written: dict) -> set[str]:
    """Fields that are not written but, set to another value, change one that is (TRL's __post_init__)."""
    base = trl_class(**written)
    types = typing.get_type_hints(trl_class)
    aliases = set()
    for field in dataclasses.fields(trl_class):
        if field.name in written or field.default is dataclasses.MISSING:
            continue
        for value in other_values(types.get(field.name), field.default):
            try:
                changed = trl_class(**{**written, field.name: value})
            except Exception:  # noqa: BLE001 - an invalid combination is no alias
                continue
            if any(getattr(changed, name) != getattr(base, name) for name in written):
                aliases.add(field.name)
    return aliases


@pytest.mark.parametrize("algorithm", trl_algorithms())
def test_every_trl_field_flux_writes_is_refused_in_the_trl_block(algorithm, tmp_path, tiny_model_dir, monkeypatch):
    trl_class, written = fields_flux_writes(algorithm, tmp_path, tiny_model_dir, monkeypatch)
    owned = get_registry().get_algorithm(algorithm).config_schema.flux_owned_trl_fields
    flux_fields = set(written) | aliases_of(trl_class, written)
    assert {"max_steps", "per_device_train_batch_size", "activation_checkpointing"} <= flux_fields
    assert sorted(flux_fields - set(owned)) == []
    for field in sorted(flux_fields):
        value = written.get(field, trl_class.__dataclass_fields__[field].default)
        with pytest.raises(ConfigError, match=rf"^config: trl\.{field}: "):
            flux_config(algorithm, tmp_path, trl={field: value})


@pytest.mark.parametrize("algorithm", trl_algorithms())
def test_trl_num_train_epochs_is_refused_naming_num_epochs(algorithm, tmp_path):
    # TRL ignores num_train_epochs when max_steps is set, and Flux always sets max_steps.
    with pytest.raises(ConfigError, match=r"trl\.num_train_epochs: is set by Flux: use num_epochs$"):
        flux_config(algorithm, tmp_path, trl={"num_train_epochs": 3})
