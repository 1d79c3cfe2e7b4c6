"""flux-grpo: Group Relative Policy Optimization as a Flux plugin (wraps TRL's GRPOTrainer)."""

__version__ = "0.1.0"
