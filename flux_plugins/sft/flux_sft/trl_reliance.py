"""What flux-sft relies on in TRL, checked when a run starts: TRL's public API only (the trainer's
arguments and the chat-template helpers behind ``assistant_only_loss: auto``)."""

from flux_core import TRLReliance

TRL_RELIES_ON = (
    TRLReliance(
        "trl:SFTTrainer",
        "flux-sft builds its trainer with these arguments",
        keywords=("model", "args", "train_dataset", "eval_dataset", "processing_class", "peft_config", "callbacks"),
    ),
    TRLReliance(
        "trl.chat_template_utils:has_generation_markers",
        "assistant_only_loss: auto asks it whether a chat template marks assistant turns",
        parameters=("chat_template",),
    ),
    TRLReliance(
        "trl.chat_template_utils:get_training_chat_template",
        "assistant_only_loss: auto asks it whether TRL ships a training version of a chat template",
        parameters=("processing_class",),
    ),
)
