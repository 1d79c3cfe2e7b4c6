"""The raw-TRL side of the parity tests, now shipped in the test kit (flux_core.testing.parity); the plugin
tests that import it from here keep working."""

from flux_core.testing.parity import raw_trl_args, raw_trl_losses

__all__ = ["raw_trl_args", "raw_trl_losses"]
