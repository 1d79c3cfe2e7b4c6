"""Flux: a slim, plugin-based post-training framework on top of Hugging Face TRL.

``from flux import FluxConfig, FluxTrainer`` is the whole user API; algorithms come
from installed plugins (``pip install flux-dpo``). Heavy modules load on first use.
"""

import warnings as _warnings

from flux_core import __version__
from flux_core.config import FluxConfig
from flux_core.errors import ConfigError, DataError, FluxError
from flux_core.installation import mixed_flux_package_problem as _mixed_flux_package_problem

# Another distribution's `flux` (PyPI's unrelated flux-core) installed over this one: say so in one line.
if _problem := _mixed_flux_package_problem(__path__[0]):
    _warnings.warn(_problem, UserWarning, stacklevel=2)

__all__ = [
    "FluxConfig",
    "FluxTrainer",
    "FitResult",
    "StepResult",
    "FluxError",
    "ConfigError",
    "DataError",
    "__version__",
]


def __getattr__(name: str):
    if name == "FluxTrainer":
        from flux_core.trainer import FluxTrainer

        return FluxTrainer
    if name in ("FitResult", "StepResult"):
        from flux_core.run import results

        return getattr(results, name)
    raise AttributeError(f"module 'flux' has no attribute {name!r}")
