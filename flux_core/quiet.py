"""Keep library chatter out of a Flux run's output.

Model-loading and dataset-map progress bars, and deprecation warnings that only TRL
can act on, drown the one progress bar and the warnings a user should read. This
context manager silences them for the duration of a run and restores the previous
state afterwards.
"""

from __future__ import annotations

import contextlib
import warnings

# Warnings raised inside TRL/transformers about each other's APIs: nothing a Flux user can change.
_LIBRARY_NOISE = (
    r".*gradient_checkpointing.* is deprecated.*",
    r".*is_gradient_checkpointing.* is deprecated.*",
)


@contextlib.contextmanager
def quiet_libraries():
    import datasets
    from transformers.utils import logging as hf_logging

    bars_were_enabled = datasets.is_progress_bar_enabled()
    hf_bars_were_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            for pattern in _LIBRARY_NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        if bars_were_enabled:
            datasets.enable_progress_bars()
        if hf_bars_were_enabled:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)
