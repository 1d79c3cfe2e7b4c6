"""DPORunner: FluxConfig + validated dataset -> a trained, checkpointed model."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from flux_core import (
    BUILT_IN_POLICIES,
    FluxConfig,
    FluxError,
    ReferenceLogpsProvider,
    TRLRunner,
    build_trl_config,
    check_template_renders,
    get_plugin_manager,
    get_registry,
    load_model,
    load_tokenizer,
    peft_config,
    resolve_precision,
)

if TYPE_CHECKING:
    from datasets import Dataset

# TRL's log keys -> the metric names Flux users see.
METRIC_NAMES = {
    "rewards/chosen": "chosen_reward",
    "rewards/rejected": "rejected_reward",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "accuracy",
    "logps/chosen": "chosen_logp",
    "logps/rejected": "rejected_logp",
}


def build_dpo_args(config: FluxConfig, precision: str, reference_policy: Any, model: Any):
    """The ``trl.DPOConfig`` for a Flux run: Flux's keys first, then the ``trl:`` block."""
    from trl import DPOConfig

    algorithm = config.algorithm
    return build_trl_config(
        DPOConfig,
        config,
        precision,
        model,
        sequences=2 * config.batch_size,  # chosen + rejected
        extra_model_copies=1 if reference_policy == "copy" else 0,
        max_length=config.max_length,
        dataset_num_proc=config.dataset_num_proc,
        beta=algorithm.beta,
        label_smoothing=algorithm.label_smoothing,
        # Reference-free and plugin-provided references set this too: TRL then loads no
        # reference model, and FluxDPOTrainer fills the columns itself (see its docstring).
        precompute_ref_log_probs=reference_policy in ("precompute", "none")
        or isinstance(reference_policy, ReferenceLogpsProvider),
    )


def report_truncation_drops(before: int, after: int, max_length: int | None, what: str) -> None:
    """TRL drops pairs whose prompt alone fills ``max_length``: warn about some, refuse all."""
    if after == before:
        return
    if after == 0:
        raise FluxError(
            f"max_length {max_length} is too small: the prompt alone fills it in every pair of {what}; raise max_length"
        )
    warnings.warn(
        f"{what}: {before - after} of {before} pairs dropped: their prompt alone fills max_length {max_length}",
        UserWarning,
        stacklevel=2,
    )


class DPORunner(TRLRunner):
    """Builds model, reference policy, loss and TRL trainer for one DPO run (see :class:`TRLRunner`)."""

    metric_names = METRIC_NAMES
    progress_metrics = ("loss", "reward_margin")

    def reference_policy(self, num_examples: int):
        use_lora = self.config.lora is not None
        manager = get_plugin_manager()
        policy = manager.hook.reference_policy(config=self.config, use_lora=use_lora, num_examples=num_examples)
        if isinstance(policy, ReferenceLogpsProvider):
            return policy
        if policy not in BUILT_IN_POLICIES:
            raise FluxError(
                f"reference policy {policy!r} is not one of {', '.join(BUILT_IN_POLICIES)} nor a ReferenceLogpsProvider"
            )
        if policy == "adapter" and not use_lora:
            raise FluxError("algorithm.reference_policy: adapter needs a lora: block (there is no adapter to disable)")
        return policy

    def build_trainer(
        self,
        dataset: Dataset,
        eval_dataset: Dataset | None,
        callbacks: list[Any] = (),
        reference_path: str | None = None,
    ):
        """The TRL trainer of this run. ``reference_path``: load the ``copy`` reference from there
        instead of ``model_path`` (``flux eval`` scores a checkpoint against its base model)."""
        from flux_dpo.collators import resolve_collation
        from flux_dpo.trainer import FluxDPOTrainer

        config = self.config
        precision = resolve_precision(config.precision)
        policy = self.reference_policy(num_examples=len(dataset))
        self.tokenizer = load_tokenizer(config.model_path, config.chat_template)
        check_template_renders(self.tokenizer, dataset, config.model_path)
        _, attention = resolve_collation(config.algorithm.collation)  # packed: a varlen kernel where one exists
        model = load_model(
            config.model_path, precision, attn_implementation=attention, quantize=config.base_quantization
        )
        # `copy` with LoRA needs an explicit frozen copy; without LoRA TRL loads it itself.
        explicit_reference = policy == "copy" and (config.lora or reference_path)
        ref_model = (
            load_model(
                reference_path or config.model_path,
                precision,
                attn_implementation=attention,
                quantize=config.base_quantization,  # QLoRA's frozen reference is as small as its base
            )
            if explicit_reference
            else None
        )
        loss = get_registry().get_loss(config.algorithm.loss, "dpo")
        collator = get_plugin_manager().hook.collate_batch(config=config, tokenizer=self.tokenizer, algorithm="dpo")

        self.announce_tokenizing(dataset, eval_dataset)
        trainer = FluxDPOTrainer(
            model=model,
            ref_model=ref_model,
            args=build_dpo_args(config, precision, policy, model),
            data_collator=collator,
            train_dataset=dataset,
            eval_dataset=eval_dataset,
            processing_class=self.tokenizer,
            peft_config=peft_config(config.lora),
            callbacks=list(callbacks),
            loss_fn=loss.fn,
            loss_name=loss.name,
            loss_kwargs=dict(config.algorithm.loss_kwargs),
            reference_policy=policy,
        )
        report_truncation_drops(len(dataset), len(trainer.train_dataset), config.max_length, "data")
        if eval_dataset is not None:
            report_truncation_drops(len(eval_dataset), len(trainer.eval_dataset), config.max_length, "eval_data")
        return self.adopt(trainer)
