"""What flux-ppo relies on in TRL, checked when a run starts. flux-ppo runs its own loop (TRL dropped
PPOTrainer in 1.13) and takes only three tensor helpers from ``trl.trainer.utils``."""

from flux_core import TRLReliance

TRL_RELIES_ON = (
    TRLReliance(
        "trl.trainer.utils:selective_log_softmax",
        "flux-ppo computes token log-probs with it",
        parameters=("logits", "index"),
    ),
    TRLReliance(
        "trl.trainer.utils:entropy_from_logits",
        "flux-ppo computes the policy's entropy with it",
        parameters=("logits",),
    ),
    TRLReliance(
        "trl.trainer.utils:disable_dropout_in_model",
        "flux-ppo turns dropout off in its networks with it",
        parameters=("model",),
    ),
)
