"""What flux-orpo relies on in TRL, checked when a run starts: the trainer's arguments and the metric names
the runner renames. ORPO lives in ``trl.experimental`` in TRL 1.16; flux_orpo.trl_experimental is the one
place it is imported (one line naming TRL's version if it moved)."""

from flux_core import TRLReliance

TRL_RELIES_ON = (
    TRLReliance(
        "flux_orpo.trl_experimental:ORPOTrainer",
        "flux-orpo builds its trainer with these arguments",
        keywords=("model", "args", "train_dataset", "eval_dataset", "processing_class", "peft_config", "callbacks"),
    ),
    TRLReliance(
        "flux_orpo.trl_experimental:ORPOTrainer",
        "flux-orpo reports these TRL metrics under readable names (chosen_reward, ...)",
        uses=("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "nll_loss"),
    ),
)
