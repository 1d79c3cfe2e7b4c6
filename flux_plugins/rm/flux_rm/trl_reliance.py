"""What flux-rm relies on in TRL, checked when a run starts: the trainer's arguments, the metric names
the runner renames (``margin`` -> ``reward_margin``, ...) and the helper that silences transformers'
fresh-head warning while the reward model loads."""

from flux_core import TRLReliance

TRL_RELIES_ON = (
    TRLReliance(
        "trl:RewardTrainer",
        "flux-rm builds its trainer with these arguments",
        keywords=("model", "args", "train_dataset", "eval_dataset", "processing_class", "peft_config", "callbacks"),
    ),
    TRLReliance(
        "trl:RewardTrainer",
        "flux-rm reports these TRL metrics (and their eval_ versions) under readable names",
        uses=("accuracy", "margin", "mean_reward", "min_reward", "max_reward"),
    ),
    TRLReliance(
        "trl:RewardTrainer.evaluate",
        "flux-rm overrides it to score eval data once per step",
        parameters=("self", "eval_dataset", "ignore_keys", "metric_key_prefix"),
    ),
    TRLReliance(
        "trl:RewardTrainer.log",
        "flux-rm overrides it to add the held-out metrics to the step's",
        parameters=("self", "logs", "start_time"),
    ),
    TRLReliance(
        "trl.trainer.reward_trainer:suppress_seqcls_warning",
        "flux-rm loads the reward model under it, as RewardTrainer does",
    ),
)
