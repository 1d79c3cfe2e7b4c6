"""flux-kto: Kahneman-Tversky Optimization (TRL's KTOTrainer) as a Flux algorithm plugin."""

__version__ = "0.1.0"
