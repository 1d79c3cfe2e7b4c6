"""What flux-dpo relies on in TRL beyond its public API, checked when a run starts.

The loss seam itself is public (``FluxDPOTrainer`` overrides transformers'
``Trainer.compute_loss``). What is not: the reference pass (``_precompute_ref_logps``,
overridden for Flux's reference cache, reference-free DPO and plugin-provided reference
log-probs), the attributes TRL's ``__init__`` sets that the loss reads, the metrics
dict the loss logs into, TRL's fused LM head and its preference collator.
:func:`flux_core.compat.check_trl` checks every entry against the installed TRL.
"""

from flux_core import TRLReliance

TRL_RELIES_ON = (
    TRLReliance(
        "trl:DPOTrainer",
        "flux-dpo builds its trainer with these arguments",
        keywords=(
            "model",
            "ref_model",
            "args",
            "data_collator",
            "train_dataset",
            "eval_dataset",
            "processing_class",
            "peft_config",
            "callbacks",
        ),
    ),
    TRLReliance(
        "trl:DPOTrainer._precompute_ref_logps",
        "flux-dpo overrides it for its reference cache, reference-free DPO and plugin reference log-probs",
        parameters=("self", "dataset", "name", "batch_size"),
    ),
    TRLReliance(
        "trl:DPOTrainer",
        "flux-dpo's override of _precompute_ref_logps must be what TRL calls, and its cache key reads the hash",
        uses=("_precompute_ref_logps", "_precompute_model_hash", "precompute_ref_logps"),
    ),
    TRLReliance(
        "trl:DPOTrainer.compute_ref_log_probs",
        "flux-dpo scores the reference through it",
        parameters=("self", "model", "inputs"),
    ),
    TRLReliance(
        "trl:DPOTrainer",
        "flux-dpo's loss reads these settings, runs TRL's fused LM head and logs into TRL's metrics",
        uses=(
            "beta",
            "label_smoothing",
            "ref_model",
            "aux_loss_enabled",
            "router_aux_loss_coef",
            "add_fused_lm_head",
            "log_probs",
            "entropy",
            "_metrics",
            "_total_train_tokens",
        ),
    ),
    TRLReliance(
        "trl:DPOTrainer.log",
        "flux-dpo moves its queued metrics to the host there",
        parameters=("self", "logs", "start_time"),
    ),
    TRLReliance(
        "trl.trainer.dpo_trainer:DataCollatorForPreference.torch_call",
        "collation: packed starts from TRL's padded batch",
        parameters=("self", "examples"),
    ),
    TRLReliance(
        "trl.models.utils:disable_gradient_checkpointing",
        "packed batches score the reference as TRL does",
        parameters=("model", "gradient_checkpointing_kwargs"),
    ),
    TRLReliance(
        "trl.trainer.utils:use_adapter",
        "packed batches with LoRA score the reference with the adapter disabled, as TRL does",
        parameters=("model", "adapter_name"),
    ),
)
