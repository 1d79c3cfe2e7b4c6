"""One Flux training run from a plain config dict, as a plugin's tests start one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flux_core.run.results import FitResult

# What a test run on the tiny model needs beyond model_path and output_dir: a handful of short steps,
# compared in fp32 (CPU and CUDA alike).
TINY_RUN = {"num_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "precision": "fp32"}


def run_flux(config: dict[str, Any], data: Any = None, **fit_kwargs: Any) -> FitResult:
    """Train with ``config`` (a dict as a YAML config holds it, ``TINY_RUN`` filling what it leaves out) on
    ``data`` (anything ``FluxTrainer.fit`` takes; default: the config's ``data``), without a progress bar;
    ``fit_kwargs`` go to ``fit`` (``data_format``, ``eval_data``, ``resume``, ``overwrite``)."""
    from flux_core.config import FluxConfig
    from flux_core.trainer import FluxTrainer

    trainer = FluxTrainer(FluxConfig.from_dict({**TINY_RUN, **config}), show_progress=False)
    return trainer.fit(data, **fit_kwargs)
