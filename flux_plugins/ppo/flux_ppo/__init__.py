"""flux-ppo: actor-critic PPO (the InstructGPT / "N implementation details of RLHF with
PPO" recipe) as a Flux plugin, on current TRL, transformers and peft."""

__version__ = "0.1.0"
