"""What flux-rloo relies on in TRL, checked when a run starts: TRL's public API only (the trainer's
arguments and the metric names the runner renames)."""

from flux_core import TRLReliance

TRL_RELIES_ON = (
    TRLReliance(
        "trl:RLOOTrainer",
        "flux-rloo builds its trainer with these arguments",
        keywords=(
            "model",
            "reward_funcs",
            "args",
            "train_dataset",
            "eval_dataset",
            "processing_class",
            "peft_config",
            "callbacks",
        ),
    ),
    TRLReliance(
        "trl:RLOOTrainer",
        "flux-rloo reports these TRL metrics under readable names (reward_<name>, completion_length, ...)",
        uses=("reward", "reward_std", "kl", "completions/mean_length", "completions/clipped_ratio"),
    ),
)
