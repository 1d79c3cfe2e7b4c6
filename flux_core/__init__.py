"""flux_core: hook specifications, plugin manager, registries, config and the user API."""

from flux_core.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
