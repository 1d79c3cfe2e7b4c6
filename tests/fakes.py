"""Stand-ins shared by the checkpoint tests: no model, no tokenizer, a real but minimal config."""

from flux_core.config import FluxConfig


def FakeConfig() -> FluxConfig:  # noqa: N802 - used where a config object is built inline
    """The smallest valid run config: checkpoints write it (flux_config.yaml) and a model card from it."""
    return FluxConfig.from_dict({"model_path": "m", "algorithm": {"name": "dpo"}})
