"""Keep library chatter out of a Flux run's output.

Model-loading and dataset-map progress bars, and deprecation warnings that only TRL
can act on, drown the one progress bar and the warnings a user should read. This
context manager silences them for the duration of a run and restores the previous
state afterwards. Download progress stays: a first run of a hub model or dataset
spends minutes downloading, and huggingface_hub's bars are what shows it.
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
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    bars_were_enabled = datasets.is_progress_bar_enabled()
    hf_bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hub_bars_were_disabled = hub_utils.are_progress_bars_disabled()
    verbosity = hf_logging.get_verbosity()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()  # transformers' own bars; it turns off huggingface_hub's too...
    if not hub_bars_were_disabled:
        hub_utils.enable_progress_bars()  # ...whose download bars stay on
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
        if hub_bars_were_disabled and not hub_utils.are_progress_bars_disabled():
            hub_utils.disable_progress_bars()
        hf_logging.set_verbosity(verbosity)
