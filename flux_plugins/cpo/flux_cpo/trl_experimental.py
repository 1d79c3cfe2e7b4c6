"""The one place flux-cpo imports from ``trl.experimental``, where TRL 1.16 keeps CPO (and with it SimPO).

If TRL moves or drops it, importing this module stops the run in one line naming the installed TRL
and flux-cpo.
"""

from flux_core import import_trl_experimental

CPOConfig, CPOTrainer = import_trl_experimental("trl.experimental.cpo", "CPOConfig", "CPOTrainer", owner="flux-cpo")
