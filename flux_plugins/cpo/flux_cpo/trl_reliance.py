"""What flux-cpo relies on in TRL, checked when a run starts: the trainer's arguments, the loss types
and the metric names the runner renames. CPO lives in ``trl.experimental`` in TRL 1.16;
flux_cpo.trl_experimental is the one place it is imported (one line naming TRL's version if it moved)."""

from flux_core import TRLReliance

TRL_RELIES_ON = (
    TRLReliance(
        "flux_cpo.trl_experimental:CPOTrainer",
        "flux-cpo builds its trainer with these arguments",
        keywords=("model", "args", "train_dataset", "eval_dataset", "processing_class", "peft_config", "callbacks"),
    ),
    TRLReliance(
        "flux_cpo.trl_experimental:CPOTrainer",
        "flux-cpo offers these loss types and reports these TRL metrics under readable names (chosen_reward, ...)",
        uses=("simpo", "sigmoid", "hinge", "ipo", "rewards/chosen", "rewards/margins", "rewards/accuracies"),
    ),
    TRLReliance(
        "flux_cpo.trl_experimental:CPOConfig",
        "flux-cpo offers loss_type alphapo, which TRL's config turns into simpo with cpo_alpha 0",
        uses=("alphapo", "simpo", "cpo_alpha"),
    ),
)
