"""flux-orpo: Odds Ratio Preference Optimization (TRL's ORPOTrainer) as a Flux algorithm plugin."""

__version__ = "0.1.0"
