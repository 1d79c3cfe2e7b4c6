"""What flux-online-dpo relies on in TRL, checked when a run starts.

TRL 1.16 keeps ``OnlineDPOTrainer`` under ``trl.experimental`` (reached through ``trl_experimental.py``,
so the entries below name this plugin's module, not TRL's path). Public: the trainer's arguments and the
metrics it logs. Private: ``_generate(model, prompts, images)``, which a rollout server's generation
replaces (``rollouts.py``), the tensors ``training_step`` reads from it, and ``_tokenizer``.
"""

from flux_core import TRLReliance

TRAINER = "flux_online_dpo.trl_experimental:OnlineDPOTrainer"

TRL_RELIES_ON = (
    TRLReliance(
        TRAINER,
        "flux-online-dpo builds its trainer with these arguments",
        keywords=("model", "reward_funcs", "args", "train_dataset", "processing_class", "peft_config", "callbacks"),
    ),
    TRLReliance(
        TRAINER,
        "flux-online-dpo reports these TRL metrics under readable names (reward, reward_margin, ...)",
        uses=(
            "objective/scores",
            "objective/kl",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "rewards/accuracies",
            "logps/chosen",
            "logps/rejected",
        ),
    ),
    TRLReliance(
        f"{TRAINER}._generate",
        "with a rollout server, flux-online-dpo replaces it to sample through the server",
        parameters=("self", "model", "prompts", "images"),
    ),
    TRLReliance(
        TRAINER,
        "training_step samples through _generate and reads the tokenizer it keeps",
        uses=("_generate", "_tokenizer"),
    ),
)
