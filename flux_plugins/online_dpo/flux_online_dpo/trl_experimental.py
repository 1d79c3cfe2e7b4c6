"""The one place flux-online-dpo imports TRL's online DPO, which TRL 1.16 keeps under ``trl.experimental``.

``trl.experimental`` may change or move in any TRL release. Everything in this plugin reaches
``OnlineDPOTrainer`` and ``OnlineDPOConfig`` through this module (the runner, the ``trl:`` block's field
check, the TRL canary in ``trl_reliance.py``), so if TRL moves them, a run stops in one line that names
the installed TRL and this plugin, and this file is the one to change.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from flux_core import TESTED_TRL, FluxError

MODULE = "trl.experimental.online_dpo"
NAMES = ("OnlineDPOConfig", "OnlineDPOTrainer")


def online_dpo_module() -> Any:
    """TRL's online DPO module, or a one-line FluxError naming the installed TRL when it is not there."""
    try:
        with warnings.catch_warnings():
            # Flux owns this seam and checks it when a run starts: TRL's "experimental" notice is not for users.
            warnings.filterwarnings("ignore", message="You are importing from 'trl.experimental'")
            return importlib.import_module(MODULE)
    except ImportError as error:
        import trl

        from flux_online_dpo import __version__

        raise FluxError(
            f"flux-online-dpo {__version__} cannot run on TRL {trl.__version__}: {MODULE} cannot be imported "
            f"({error}); it was written for TRL 1.16's: pip install 'trl{TESTED_TRL}'"
        ) from None


def __getattr__(name: str) -> Any:
    """``OnlineDPOConfig`` and ``OnlineDPOTrainer``, imported on first use (``import flux`` stays fast)."""
    if name in NAMES:
        return getattr(online_dpo_module(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
