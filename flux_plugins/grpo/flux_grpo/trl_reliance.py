"""What flux-grpo relies on in TRL, checked when a run starts.

Public but young: ``GRPOTrainer(rollout_func=...)``, TRL's experimental seam through which a
rollout server's completions reach the trainer. Private: the vLLM-server state that
switches on TRL's importance-sampling correction for a server's log-probs
(``correct_with_server_logprobs``), and, with ``adaptive_async``, the wrapped
``_generate_and_score_completions`` and the metrics dict it logs into.
:func:`flux_core.compat.check_trl` checks every entry against the installed TRL.
"""

from flux_core import TRLReliance

TRL_RELIES_ON = (
    TRLReliance(
        "trl:GRPOTrainer",
        "flux-grpo builds its trainer with these arguments; rollout_func is how a rollout server's completions arrive",
        keywords=(
            "model",
            "reward_funcs",
            "args",
            "train_dataset",
            "eval_dataset",
            "processing_class",
            "peft_config",
            "callbacks",
            "rollout_func",
        ),
    ),
    TRLReliance(
        "trl:GRPOTrainer",
        "rollout_func(prompts, trainer) returns prompt_ids, completion_ids and logprobs; TRL logs these metrics",
        uses=(
            "rollout_func",
            "prompt_ids",
            "completion_ids",
            "logprobs",
            "completions/mean_length",
            "completions/clipped_ratio",
        ),
    ),
    TRLReliance(
        "trl:GRPOTrainer",
        "a rollout server's log-probs switch on TRL's importance-sampling correction through its vLLM-server state",
        uses=(
            "use_vllm",
            "vllm_mode",
            "vllm_generation",
            "sync_weights",
            "_last_loaded_step",
            "vllm_importance_sampling_correction",
            "sampling_per_token_logps",
        ),
    ),
    TRLReliance(
        "trl:GRPOTrainer._generate_and_score_completions",
        "adaptive_async wraps it to measure how far the rollouts' policy drifted",
        parameters=("self", "inputs"),
    ),
    TRLReliance(
        "trl:GRPOTrainer",
        "adaptive_async reads the old and sampling log-probs TRL computes, and logs into TRL's metrics",
        uses=(
            "_generate_and_score_completions",
            "old_per_token_logps",
            "completion_mask",
            "num_iterations",
            "_metrics",
        ),
    ),
    TRLReliance(
        "trl:GRPOTrainer.get_batch_samples",
        "adaptive_async reads the coming batches ahead to submit their prompts early",
        parameters=("self", "epoch_iterator", "num_batches", "device"),
    ),
)
