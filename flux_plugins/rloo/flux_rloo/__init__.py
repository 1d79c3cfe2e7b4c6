"""flux-rloo: REINFORCE Leave-One-Out (TRL's RLOOTrainer) as a Flux algorithm plugin."""

__version__ = "0.1.0"
