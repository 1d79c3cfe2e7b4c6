"""What flux-distill relies on in TRL, checked when a run starts: TRL's public API only (the trainer's
arguments and the metric names the runner renames)."""

from flux_core import TRLReliance

TRL_RELIES_ON = (
    TRLReliance(
        "trl:DistillationTrainer",
        "flux-distill builds its trainer with these arguments",
        keywords=(
            "model",
            "teacher_model",
            "args",
            "train_dataset",
            "eval_dataset",
            "processing_class",
            "peft_config",
            "callbacks",
        ),
    ),
    TRLReliance(
        "trl:DistillationTrainer",
        "flux-distill reports these TRL metrics under readable names",
        uses=("completions/mean_length", "completions/clipped_ratio", "entropy"),
    ),
)
