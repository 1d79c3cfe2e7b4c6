"""flux-cpo: Contrastive Preference Optimization and SimPO (TRL's CPOTrainer) as a Flux algorithm plugin."""

__version__ = "0.1.0"
