"""flux-sft: supervised fine-tuning (TRL's SFTTrainer) as a Flux algorithm plugin."""

__version__ = "0.1.0"
