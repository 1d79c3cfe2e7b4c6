"""Stand-ins shared by tests in several folders: a real but minimal config (checkpoint tests), and a
reward plugin that records the prompts it scores (the GRPO and PPO epoch tests)."""

from flux_core import hookimpl
from flux_core.config import FluxConfig


def FakeConfig() -> FluxConfig:  # noqa: N802 - used where a config object is built inline
    """The smallest valid run config: checkpoints write it (flux_config.yaml) and a model card from it."""
    return FluxConfig.from_dict({"model_path": "m", "algorithm": {"name": "dpo"}})


class PromptsSeen:
    """A reward of 0 that records every prompt it scores (one per completion)."""

    def __init__(self):
        self.prompts: list[str] = []

    def seen(self, prompts, completions, **columns):
        self.prompts.extend(prompts)
        return [0.0] * len(completions)

    @hookimpl
    def register_rewards(self, register):
        register("prompts_seen", self.seen)
