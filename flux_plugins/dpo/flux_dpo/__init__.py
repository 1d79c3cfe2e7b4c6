"""flux-dpo: Direct Preference Optimization as a Flux plugin (wraps TRL's DPOTrainer)."""

__version__ = "0.1.0"
