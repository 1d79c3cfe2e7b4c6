"""flux-distill: on-policy knowledge distillation (TRL's DistillationTrainer) as a Flux algorithm plugin."""

__version__ = "0.1.0"
