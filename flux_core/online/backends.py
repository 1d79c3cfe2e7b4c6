"""Which rollout backend a run uses: the one place that knows every backend."""

from __future__ import annotations

from typing import Any

from flux_core.online.rollout import LocalBackend, RolloutBackend
from flux_core.online.sglang import SGLangBackend


def create_backend(config: Any, model: Any, tokenizer: Any) -> RolloutBackend:
    """The rollout backend a run's config asks for: :class:`~flux_core.online.sglang.SGLangBackend`
    when ``sglang.base_url`` is set (it checks the server is up), else :class:`LocalBackend`."""
    if config.sglang.base_url:
        return SGLangBackend.from_config(config, model, tokenizer)
    return LocalBackend(model, tokenizer)
