"""flux-online-dpo: online DPO (TRL's OnlineDPOTrainer) as a Flux algorithm plugin."""

__version__ = "0.1.0"
