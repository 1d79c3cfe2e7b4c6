"""What flux-kto relies on in TRL, checked when a run starts: TRL's public API only (the trainer's
arguments, its pair-unpairing helper and the metric names the runner renames)."""

from flux_core import TRLReliance

TRL_RELIES_ON = (
    TRLReliance(
        "trl:KTOTrainer",
        "flux-kto builds its trainer with these arguments",
        keywords=("model", "args", "train_dataset", "eval_dataset", "processing_class", "peft_config", "callbacks"),
    ),
    TRLReliance(
        "trl:KTOTrainer",
        "flux-kto reports these TRL metrics under readable names (desirable_reward, ...)",
        uses=("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "kl"),
    ),
    TRLReliance(
        "trl.data_utils:unpair_preference_dataset",
        "flux-kto turns preference pairs into labelled examples with it",
        parameters=("dataset",),
    ),
)
