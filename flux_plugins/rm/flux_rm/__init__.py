"""flux-rm: reward models (TRL's RewardTrainer) as a Flux algorithm plugin."""

__version__ = "0.1.0"
