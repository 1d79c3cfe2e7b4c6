"""The networks of a PPO run: policy log-probs, the value model and the reference, and
loading them from a run's config (:func:`load_policy`, :func:`load_critic`).

All three score the same padded batch: prompts left-padded, completions right-padded
after them, so every completion starts at the same column and
``input_ids[:, -completion_length:]`` are the completion tokens. Positions come from
the attention mask, exactly as ``generate`` computed them while sampling, so log-probs
of a left-padded prompt equal those of the same prompt unpadded.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flux_core import (
    REWARD_MODEL,
    FluxConfig,
    FluxError,
    check_finite_weights,
    get_plugin_manager,
    load_model,
    peft_config,
)


def position_ids_from(attention_mask: Tensor) -> Tensor:
    """0, 1, 2, ... over the attended tokens of each row (padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def completion_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_length: int,
    temperature: float,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-prob of each completion token under ``model`` (and, optionally, the entropy of
    its next-token distribution), shape ``[batch, completion_length]``.

    Logits are divided by ``temperature`` first: the ratios PPO needs are those of the
    distribution that was actually sampled from.
    """
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    outputs = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from(attention_mask),
        use_cache=False,
        logits_to_keep=completion_length + 1,  # only the positions that predict completion tokens
    )
    # The logit at position i predicts token i + 1: drop the one after the last token.
    logits = outputs.logits[:, :-1].float() / temperature
    logprobs = selective_log_softmax(logits, input_ids[:, -completion_length:])
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logprobs, entropy


def compute_logits_in_fp32(model: nn.Module) -> None:
    """Make ``model``'s LM head run in fp32 under autocast: its input is cast up and autocast is
    off inside it (the head's own forward, so a LoRA adapter on it still applies).

    Under bf16 autocast the logits keep ~3 significant digits, and everything PPO does reads
    them: sampling, the log-probs of its ratios and the KL. On the PPO demo (4 seeds, CPU bf16
    autocast standing in for a GPU) the last-10% reward was 0.46 with bf16 logits, 0.66 with
    fp32 ones and 0.71 in fp32 throughout (docs/ppo.md). TRL's GRPO calls this
    ``cast_lm_head_to_fp32``. The weights are fp32 already (PPORunner keeps them so); the cost is the
    head's matmul at fp32 speed.
    """
    head = model.get_output_embeddings()
    forward = type(head).forward

    def forward_in_fp32(self: nn.Module, hidden: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            return forward(self, hidden.float(), *args, **kwargs)

    # Bound to the head itself (not a closure over it), so a deep copy of the model rebinds it.
    head.forward = types.MethodType(forward_in_fp32, head)


# ---------------------------------------------------------------------- value model


def load_value_model(path: str, precision_dtype: torch.dtype, key: str) -> nn.Module:
    """A transformer trunk with a scalar head: ``AutoModelForSequenceClassification`` with
    one label, loaded from ``path``.

    From a causal-LM directory (the policy) this keeps the trunk and adds a new head;
    from a sequence-classification directory (e.g. the reward model) it keeps both, the
    InstructGPT choice. ``key`` names the setting in error messages.
    """
    from transformers import AutoModelForSequenceClassification

    local = Path(path).expanduser()
    if path.startswith((".", "/", "~")) or local.exists():
        if not local.is_dir():
            raise FluxError(f"{key}: '{path}': directory not found")
        path = str(local)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=precision_dtype)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FluxError(f"{key}: cannot load a value model from '{path}': {first}") from None
    check_finite_weights(model, path)
    if not hasattr(model, "score"):
        raise FluxError(
            f"{key}: {type(model).__name__} has no scalar 'score' head; use a decoder model (Llama, Qwen, Mistral, ...)"
        )
    return model


def value_trunk_and_head(value_model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The transformer trunk and the ``score`` head of a (possibly LoRA-wrapped) value model."""
    from peft import PeftModel

    inner = value_model.get_base_model() if isinstance(value_model, PeftModel) else value_model
    return getattr(inner, inner.base_model_prefix), inner.score


def completion_values(
    value_model: nn.Module, input_ids: Tensor, attention_mask: Tensor, completion_length: int
) -> Tensor:
    """Value of the state before each completion token, shape ``[batch, completion_length]``.

    Like the policy's logits, the value at position i belongs to token i + 1: it is the
    critic's estimate of the return from that token on.
    """
    trunk, head = value_trunk_and_head(value_model)
    hidden = trunk(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from(attention_mask),
        use_cache=False,
    ).last_hidden_state
    # The scalar head in fp32 even under autocast: bf16 values have ~3 significant digits,
    # too coarse for GAE's differences of successive values.
    hidden = hidden[:, -completion_length - 1 : -1].float()
    with torch.autocast(hidden.device.type, enabled=False):
        dtype = next(head.parameters()).dtype  # fp32: PPORunner keeps its weights fp32
        return head(hidden.to(dtype)).squeeze(-1).float()


class CriticForward(nn.Module):
    """The critic's per-token values as one module ``forward``, so that DDP (which only
    reduces gradients of parameters used through its wrapper's forward) can wrap it:
    :func:`completion_values` calls the value model's trunk and head apart."""

    def __init__(self, value_model: nn.Module):
        super().__init__()
        self.value_model = value_model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, completion_length: int) -> Tensor:
        return completion_values(self.value_model, input_ids, attention_mask, completion_length)


# ---------------------------------------------------------------------- reference


class ReferencePolicy:
    """Reference log-probs for the KL penalty, from one of three sources.

    - ``copy``: a frozen copy of the initial policy (``model`` is that copy).
    - ``adapter``: the LoRA policy itself with its adapter disabled, which *is* the
      initial model, so no second copy is held in memory.
    - ``none``: no reference; :meth:`logprobs` returns ``None`` and there is no KL penalty.
    """

    def __init__(self, kind: str, model: nn.Module | None = None, policy: nn.Module | None = None):
        if kind == "copy" and model is None:
            raise ValueError("a 'copy' reference needs its frozen model")
        if kind == "adapter" and policy is None:
            raise ValueError("an 'adapter' reference needs the LoRA policy")
        self.kind = kind
        self.model = model
        self.policy = policy

    @contextlib.contextmanager
    def _reference_model(self) -> Iterator[nn.Module]:
        if self.kind == "adapter":
            with self.policy.disable_adapter():
                yield self.policy
        else:
            yield self.model

    @torch.no_grad()
    def logprobs(
        self, input_ids: Tensor, attention_mask: Tensor, completion_length: int, temperature: float
    ) -> Tensor | None:
        if self.kind == "none":
            return None
        with self._reference_model() as model:
            logprobs, _ = completion_logprobs(model, input_ids, attention_mask, completion_length, temperature)
        return logprobs


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: for the frozen reference copy."""
    model.eval()
    model.requires_grad_(False)
    return model


def disable_dropout(model: Any) -> None:
    """Dropout off everywhere: with it, the log-probs of one rollout would differ between
    the rollout pass and the first update, and the PPO ratio would not start at 1."""
    from trl.trainer.utils import disable_dropout_in_model

    disable_dropout_in_model(model)


# ---------------------------------------------------------------------- loading a run's networks

REFERENCE_POLICIES = ("copy", "adapter", "none")


def reference_policy_kind(config: FluxConfig) -> str:
    """Where the reference log-probs come from: one of :data:`REFERENCE_POLICIES`, as
    ``algorithm.reference_policy`` or a plugin's ``reference_policy`` hook decides."""
    use_lora = config.lora is not None
    # num_examples=None: PPO scores fresh completions, so no policy may precompute.
    policy = get_plugin_manager().hook.reference_policy(config=config, use_lora=use_lora, num_examples=None)
    if policy == "precompute":
        raise FluxError(
            "algorithm.reference_policy: PPO scores fresh completions every step, so reference log-probs "
            "cannot be precomputed; use copy, adapter (with lora:) or none"
        )
    if policy not in REFERENCE_POLICIES:
        raise FluxError(f"reference policy {policy!r} is not one of {', '.join(REFERENCE_POLICIES)}")
    if policy == "adapter" and not use_lora:
        raise FluxError("algorithm.reference_policy: adapter needs a lora: block (there is no adapter to disable)")
    return policy


def load_policy(config: FluxConfig, reference_kind: str, device: torch.device) -> tuple[nn.Module, ReferencePolicy]:
    """The policy, fp32 (with its LoRA adapter when ``lora:`` is set), and its reference."""
    from peft import get_peft_model

    if config.base_quantization is not None:  # its own loop keeps fp32 weights on one device
        raise FluxError("lora.quantize: PPO trains an fp32 policy and cannot use a quantized base; drop lora.quantize")
    policy = load_model(config.model_path, "fp32").to(device)
    disable_dropout(policy)
    if config.lora is not None:
        policy = get_peft_model(policy, peft_config(config.lora))
    reference_model = freeze(load_model(config.model_path, "fp32").to(device)) if reference_kind == "copy" else None
    reference = ReferencePolicy(reference_kind, model=reference_model, policy=policy)
    if config.algorithm.fp32_lm_head:  # a no-op in fp32; under autocast the logits stay full precision
        for model in filter(None, (policy, reference_model)):
            compute_logits_in_fp32(model)
    return policy, reference


def value_model_source(config: FluxConfig) -> tuple[str, str]:
    """Where the critic starts, and the setting that chose it (for error messages).

    ``value_model: null`` with exactly one reward, a reward model, starts from that reward
    model, head included (InstructGPT, TRL's PPO example): its value estimates begin on the
    score's scale. Otherwise: the policy's trunk with a new scalar head.
    """
    algorithm = config.algorithm
    if algorithm.value_model:
        return algorithm.value_model, "algorithm.value_model"
    specs = algorithm.reward_specs
    if len(specs) == 1 and specs[0].name == REWARD_MODEL:
        return specs[0].kwargs["path"], "algorithm.reward_model"
    return config.model_path, "model_path"


def load_critic(config: FluxConfig, pad_token_id: int, device: torch.device) -> nn.Module:
    """The value model (see :func:`value_model_source`), fp32, through a LoRA adapter with ``value_lora``."""
    from peft import get_peft_model

    value_path, value_key = value_model_source(config)
    value_model = load_value_model(value_path, torch.float32, key=value_key).to(device)
    value_model.config.pad_token_id = pad_token_id
    disable_dropout(value_model)
    if config.algorithm.value_lora and config.lora is not None:
        lora = peft_config(config.lora)
        lora.task_type = "SEQ_CLS"  # keeps the scalar `score` head fully trainable
        value_model = get_peft_model(value_model, lora)
    return value_model
