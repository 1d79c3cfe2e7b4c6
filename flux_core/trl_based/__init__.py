"""What algorithms that wrap a TRL trainer share: :class:`~flux_core.trl_based.runner.TRLRunner`,
the TRL config every run builds (:mod:`~flux_core.trl_based.settings`) and the bridge from a
TRL trainer's logs, evaluation and training loop to Flux's steps and checkpoints
(:mod:`~flux_core.trl_based.callbacks`). flux-dpo, flux-grpo, flux-kto, flux-sft and flux-rm
are built on it; flux-ppo, with its own loop, is not.
"""
