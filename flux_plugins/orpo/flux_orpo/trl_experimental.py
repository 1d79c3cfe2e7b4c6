"""The one place flux-orpo imports from ``trl.experimental``, where TRL 1.16 keeps ORPO.

If TRL moves or drops it, importing this module stops the run in one line naming the installed TRL
and flux-orpo.
"""

from flux_core import import_trl_experimental

ORPOConfig, ORPOTrainer = import_trl_experimental(
    "trl.experimental.orpo", "ORPOConfig", "ORPOTrainer", owner="flux-orpo"
)
