"""FluxDPOTrainer: TRL's DPOTrainer with one seam, the loss.

TRL 1.16 computes its 15 DPO losses in an if/elif chain inside the private
``DPOTrainer._compute_loss``; there is no hook to plug in another. This subclass
overrides the public ``compute_loss`` of transformers' ``Trainer`` (TRL's only calls
``_compute_loss``), so the loss seam relies on no private TRL method: the policy
forward pass (TRL's fused LM head) and the reference log-probs
(``DPOTrainer.compute_ref_log_probs``) are TRL's own, the loss comes from Flux's loss
registry, and the metrics keep TRL's names so TRL's logging is unchanged. Everything
else (tokenization, collation, precompute, PEFT, distributed training) is inherited.
What this class still takes from TRL's private side is listed, and checked when a run
starts, in :mod:`flux_dpo.trl_reliance`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from flux_core import (
    FluxError,
    ReferenceLogpsProvider,
    announce_phase,
    reference_cache_file,
    staged_path,
    update_digest,
)
from flux_dpo.collators import sequence_sums
from flux_dpo.inputs import PreferenceLogps

logger = logging.getLogger("flux")

_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", "sequence_ids", "completion_lengths"}


class FluxDPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is a registered Flux loss.

    Args:
        loss_fn: ``fn(PreferenceLogps, *, beta, label_smoothing, **loss_kwargs) -> Tensor[batch]``.
        loss_name: name shown in errors.
        loss_kwargs: the user's ``algorithm.loss_kwargs``.
        reference_policy: ``copy``, ``adapter``, ``precompute``, ``none`` or a
            :class:`ReferenceLogpsProvider`. Other arguments are ``DPOTrainer``'s. For
            ``none`` and a provider, pass ``args.precompute_ref_log_probs=True``: TRL then
            loads no reference model, and this class fills the reference columns itself
            (zeros are never stored: ``none`` passes ``None`` to the loss). ``precompute``
            results are cached under ``output_dir/.flux-cache`` and reused by later runs.
    """

    def __init__(
        self,
        *args: Any,
        loss_fn: Callable[..., torch.Tensor],
        loss_name: str,
        loss_kwargs: dict[str, Any],
        reference_policy: str | ReferenceLogpsProvider,
        **kwargs: Any,
    ):
        self.flux_loss_fn = loss_fn
        self.flux_loss_name = loss_name
        self.flux_loss_kwargs = loss_kwargs
        self.flux_reference_policy = reference_policy
        # metrics of the micro-batches since the last log, still on the device (see log)
        self._flux_queued_metrics: dict[str, list] = {"train": [], "eval": []}
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        policy = self.flux_reference_policy
        if policy == "none":
            return dataset  # reference-free: nothing to precompute
        if isinstance(policy, ReferenceLogpsProvider):
            return _with_reference_columns(dataset, *_provided_logps(policy, dataset))
        cache_file = self._reference_cache_file(dataset, name)
        if cache_file.exists():
            logger.info("reference log-probs for %s: reusing %s", name, cache_file)
            cached = torch.load(cache_file, weights_only=True)
            return _with_reference_columns(dataset, cached["ref_chosen_logps"], cached["ref_rejected_logps"])
        announce_phase(f"scoring {len(dataset)} {name} pairs with the reference model (reference_policy: precompute)")
        dataset = super()._precompute_ref_logps(dataset, name, batch_size)
        if self.accelerator.is_main_process:
            _atomic_torch_save(
                {
                    "ref_chosen_logps": torch.tensor(dataset["ref_chosen_logps"]),
                    "ref_rejected_logps": torch.tensor(dataset["ref_rejected_logps"]),
                },
                cache_file,
            )
        return dataset

    def _reference_cache_file(self, dataset, name: str) -> Path:
        """Cache path keyed by the reference weights, the tokenized data and the settings that shape it."""
        digest = hashlib.sha256()
        digest.update(str(self._precompute_model_hash).encode())
        update_digest(digest, dataset, ["prompt_ids", "chosen_ids", "rejected_ids"])  # a batch at a time
        settings = (name, self.args.max_length, self.args.truncation_mode, self.args.bf16, self.args.fp16)
        digest.update(repr(settings).encode())
        return reference_cache_file(self.args.output_dir, digest.hexdigest()[:20])

    def _reference_logps(self, inputs: dict[str, torch.Tensor]):
        if self.flux_reference_policy == "none":
            return None, None
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        return self.compute_ref_log_probs(self.ref_model or self.model, inputs)

    def _sequence_logps(self, model, inputs, router_logits: bool = False):
        """Forward pass (TRL's fused LM head); per-sequence completion log-probs and the outputs."""
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if router_logits:  # MoE policy: the model then returns its load-balancing aux loss
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        per_token_logps = outputs.log_probs[:, -seq_len:]  # masked positions are 0
        if "sequence_ids" in inputs:  # packed: one row, summed per sequence
            logps = sequence_sums(per_token_logps, inputs["sequence_ids"], len(inputs["completion_lengths"]))
        else:
            logps = per_token_logps.sum(dim=1)
        return logps, outputs

    def compute_ref_log_probs(self, model, inputs):
        with self._reference_precision_like_the_policy():
            return self._ref_log_probs(model, inputs)

    @contextlib.contextmanager
    def _reference_precision_like_the_policy(self):
        """Under FSDP2, score the reference without accelerate's autocast, as the policy runs.

        accelerate leaves an FSDP2 policy's forward un-autocast (FSDP's MixedPrecisionPolicy
        casts its weights), while TRL computes the reference under ``accelerator.autocast()``:
        the two ran in different precisions, so at step 1, where policy == reference, the loss
        was not ln 2 (0.6914 on an H100; 0.69286 on CPU with ``mixed_precision: bf16``).
        TRL reads ``self.accelerator.autocast`` inside its method, so it is swapped on this
        trainer's accelerator for the call only.
        """
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        if not self.is_fsdp_enabled or getattr(plugin, "fsdp_version", 1) != 2:
            yield
            return
        self.accelerator.autocast = lambda *args, **kwargs: contextlib.nullcontext()
        try:
            yield
        finally:
            del self.accelerator.autocast  # the class's method again

    def _ref_log_probs(self, model, inputs):
        if "sequence_ids" not in inputs:
            return super().compute_ref_log_probs(model, inputs)
        # Packed batches: TRL's version assumes padded rows, so score them like the policy.
        adapter_context = contextlib.nullcontext()
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter_context = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            adapter_context,
            self.accelerator.autocast(),
        ):
            logps, _ = self._sequence_logps(model, inputs)
        return logps.chunk(2, dim=0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        completion_mask = inputs["completion_mask"]
        shift_completion_mask = completion_mask[..., 1:]
        seq_len = shift_completion_mask.size(1)
        logps, outputs = self._sequence_logps(model, inputs, router_logits=self.aux_loss_enabled)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)
        lengths = inputs.get("completion_lengths")
        lengths = completion_mask.sum(dim=1) if lengths is None else lengths
        chosen_lengths, rejected_lengths = lengths.float().chunk(2, dim=0)
        ref_chosen_logps, ref_rejected_logps = self._reference_logps(inputs)
        batch = PreferenceLogps(
            chosen_logps=chosen_logps,
            rejected_logps=rejected_logps,
            ref_chosen_logps=ref_chosen_logps,
            ref_rejected_logps=ref_rejected_logps,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
        )
        per_example = self.flux_loss_fn(
            batch, beta=self.beta, label_smoothing=self.label_smoothing, **self.flux_loss_kwargs
        )
        if not isinstance(per_example, torch.Tensor) or per_example.shape != chosen_logps.shape:
            shape = tuple(per_example.shape) if isinstance(per_example, torch.Tensor) else type(per_example).__name__
            raise FluxError(
                f"loss '{self.flux_loss_name}' must return one value per example (shape {tuple(chosen_logps.shape)}), "
                f"got {shape}"
            )
        loss = per_example.mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss

        self._log_metrics(mode, batch, outputs, shift_completion_mask, seq_len, inputs)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**{k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS})
            return loss, outputs
        return loss

    def _log_metrics(self, mode, batch: PreferenceLogps, outputs, shift_completion_mask, seq_len, inputs) -> None:
        """Queue TRL's metrics (rewards/*, logps/*, entropy, num_tokens) as one device tensor.

        Nothing here moves a value to the host: on a GPU each ``.item()`` is a sync that
        stalls the next kernel launch. :meth:`log` moves every queued value at once.
        """
        gather = self.accelerator.gather_for_metrics
        with torch.no_grad():
            chosen_rewards = self.beta * batch.chosen_logratios.detach()
            rejected_rewards = self.beta * batch.rejected_logratios.detach()
            per_example = torch.stack(  # [batch, len(_PER_EXAMPLE_METRICS)]: gathered along the batch
                [
                    chosen_rewards,
                    rejected_rewards,
                    (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype),
                    chosen_rewards - rejected_rewards,
                    batch.chosen_logps.detach(),
                    batch.rejected_logps.detach(),
                ],
                dim=1,
            )
            names = list(_PER_EXAMPLE_METRICS)
            values = [gather(per_example).double().mean(dim=0)]
            if outputs.entropy is not None:
                entropy_sum = gather((outputs.entropy[:, -seq_len:] * shift_completion_mask).sum()).sum()
                tokens = gather(shift_completion_mask.sum()).sum()
                values.append((entropy_sum / tokens.clamp(min=1)).double().view(1))
                names.append("entropy")
            if mode == "train":
                packed = "sequence_ids" in inputs  # no padding: every token is real
                tokens = inputs["input_ids"].numel() if packed else inputs["attention_mask"].sum()
                tokens = gather(torch.as_tensor(tokens, device=self.accelerator.device)).sum()
                values.append(tokens.double().view(1))  # float64 counts exactly up to 2**53 tokens
                names.append("num_tokens")
        self._flux_queued_metrics[mode].append((names, torch.cat(values)))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Move the queued metrics to the host in one transfer (the step's one sync for metrics),
        then log as TRL does (the mean of each metric over the micro-batches since the last log)."""
        mode = "train" if self.model.training else "eval"
        queued = self._flux_queued_metrics[mode]
        if queued:
            host = torch.cat([values for _, values in queued]).tolist()
            position = 0
            for names, _ in queued:
                for name in names:
                    if name == "num_tokens":
                        self._total_train_tokens += int(host[position])
                        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
                    else:
                        self._metrics[mode][name].append(host[position])
                    position += 1
            queued.clear()
        super().log(logs, start_time)


# Per-example metrics under TRL's names, in the column order of ``_log_metrics``'s stack.
_PER_EXAMPLE_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


def _provided_logps(provider: ReferenceLogpsProvider, dataset) -> tuple[list[float], list[float]]:
    examples = [{key: row[key] for key in ("prompt", "chosen", "rejected")} for row in dataset]
    pairs = list(provider.reference_logps(examples))
    if len(pairs) != len(examples):
        raise FluxError(
            f"reference policy '{provider.name}' returned {len(pairs)} log-prob pairs for {len(examples)} examples"
        )
    for index, pair in enumerate(pairs):
        if len(pair) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in pair):
            raise FluxError(
                f"reference policy '{provider.name}': example {index} needs (ref_chosen_logp, ref_rejected_logp) "
                f"finite numbers, got {pair!r}"
            )
    return [float(c) for c, _ in pairs], [float(r) for _, r in pairs]


def _with_reference_columns(dataset, chosen, rejected):
    chosen, rejected = torch.as_tensor(chosen).tolist(), torch.as_tensor(rejected).tolist()
    return dataset.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = staged_path(path)
    torch.save(obj, staged)
    os.replace(staged, path)
