"""Flux's built-in rewards, registered like any plugin's through ``register_rewards``.

Each is useful on its own (see docs/grpo.md for recipes). Keyword-only parameters are
settings (``kwargs:`` in YAML); other keyword arguments are dataset columns.

============== ========================================================== =============
name           what it scores                                             range
============== ========================================================== =============
exact_match    completion equals the example's ``column`` value           0 or 1
regex_match    ``pattern``'s capture in the completion equals ``column``  0 or 1
format_check   completion contains (or fully matches) ``pattern``         0 or 1
length_target  closeness of the completion length to ``target``          0 .. 1
pattern_fraction share of characters covered by matches of ``pattern``   0 .. 1
reward_model   score of a sequence-classification model (``model:``)     model's
============== ========================================================== =============
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal, Sequence

from flux_core.errors import FluxError
from flux_core.hookspecs import hookimpl
from flux_core.online.rewards import REWARD_MODEL, completion_text


def _normalise(text: Any, normalize: bool) -> str:
    text = str(text)
    return " ".join(text.split()).lower() if normalize else text


def _column(columns: dict[str, Any], name: str, reward: str) -> Sequence[Any]:
    try:
        return columns[name]
    except KeyError:
        available = ", ".join(sorted(columns)) or "none"
        raise FluxError(
            f"reward '{reward}' reads column '{name}', which the data does not have (columns: {available}); "
            f"add it to every example or set kwargs: {{column: ...}}"
        ) from None


@functools.lru_cache(maxsize=64)
def _compile(pattern: str, reward: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as error:
        raise FluxError(f"reward '{reward}': invalid regular expression {pattern!r}: {error}") from None


def exact_match(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    column: str = "answer",
    normalize: bool = True,
    **columns: Any,
) -> list[float]:
    """1.0 when the completion equals the example's ``column`` value, else 0.0.

    ``normalize`` (default on) ignores case and collapses whitespace on both sides.
    """
    references = _column(columns, column, "exact_match")
    return [
        float(_normalise(completion_text(c), normalize) == _normalise(ref, normalize))
        for c, ref in zip(completions, references)
    ]


def regex_match(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    pattern: str,
    column: str = "answer",
    normalize: bool = True,
    **columns: Any,
) -> list[float]:
    """1.0 when the text ``pattern`` extracts from the completion equals ``column``, else 0.0.

    The extracted text is the pattern's first capture group (the whole match if it has
    none), from its *last* match in the completion, so a final answer after some reasoning
    wins: e.g. ``pattern: "#### (-?[0-9]+)"`` for GSM8K-style answers. No match scores 0.
    """
    regex = _compile(pattern, "regex_match")
    references = _column(columns, column, "regex_match")
    scores = []
    for completion, reference in zip(completions, references):
        matches = list(regex.finditer(completion_text(completion)))
        if not matches:
            scores.append(0.0)
            continue
        last = matches[-1]
        extracted = last.group(1) if regex.groups else last.group(0)
        scores.append(float(_normalise(extracted, normalize) == _normalise(reference, normalize)))
    return scores


def format_check(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    pattern: str,
    full_match: bool = False,
    **columns: Any,
) -> list[float]:
    """1.0 when the completion has the required format, else 0.0.

    With ``full_match: false`` (default) ``pattern`` must occur somewhere; with ``true``
    the whole completion (stripped of surrounding whitespace) must match it, e.g.
    ``pattern: "<think>.*</think>\\s*<answer>.*</answer>"``. ``.`` also matches newlines.
    """
    regex = _compile(pattern, "format_check")
    match = regex.fullmatch if full_match else regex.search
    return [
        float(match(completion_text(c).strip() if full_match else completion_text(c)) is not None) for c in completions
    ]


def length_target(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    target: int,
    unit: Literal["chars", "words"] = "chars",
    **columns: Any,
) -> list[float]:
    """``max(0, 1 - |length - target| / target)``: 1.0 at exactly ``target``, 0.0 at 0 or 2x.

    ``unit`` counts characters (default) or whitespace-separated words.
    """
    _check_length_target(target=target, unit=unit)
    scores = []
    for completion in completions:
        text = completion_text(completion)
        length = len(text) if unit == "chars" else len(text.split())
        scores.append(max(0.0, 1.0 - abs(length - target) / target))
    return scores


def pattern_fraction(
    prompts: Sequence[Any], completions: Sequence[Any], *, pattern: str, **columns: Any
) -> list[float]:
    """Share of the completion's characters covered by (non-overlapping) matches of ``pattern``.

    A dense signal: e.g. ``pattern: "[\\x00-\\x7f]"`` rewards staying in ASCII (a language
    consistency reward), ``pattern: "[0-9]"`` rewards digits. An empty completion scores 0.
    """
    regex = _compile(pattern, "pattern_fraction")
    scores = []
    for completion in completions:
        text = completion_text(completion)
        covered = sum(match.end() - match.start() for match in regex.finditer(text))
        scores.append(covered / len(text) if text else 0.0)
    return scores


def reward_model(
    prompts: Sequence[Any], completions: Sequence[Any], *, path: str, batch_size: int = 16, **columns: Any
) -> list[float]:
    """The first logit of a sequence-classification model on prompt + completion.

    ``path`` is a model directory loadable with ``AutoModelForSequenceClassification``
    (usually given as ``{model: PATH}``). Chat data goes through the reward model's chat
    template; plain text is prompt + completion + the EOS token, the form TRL's
    ``RewardTrainer`` (and so flux-rm) trains on. The model is loaded once per process and
    runs on the GPU when there is one.
    """
    import torch

    model, tokenizer = load_reward_model(path)
    texts = [_reward_model_text(tokenizer, prompt, completion) for prompt, completion in zip(prompts, completions)]
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            padding_side="right",
            add_special_tokens=False,
        ).to(device)
        with torch.inference_mode():
            scores.extend(model(**batch).logits[:, 0].float().tolist())
    return scores


def _reward_model_text(tokenizer: Any, prompt: Any, completion: Any) -> str:
    if isinstance(prompt, list):
        messages = prompt + (
            completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        )
        return tokenizer.apply_chat_template(messages, tokenize=False)
    text = str(prompt) + completion_text(completion)
    eos = tokenizer.eos_token
    # RewardTrainer appends EOS to plain-text pairs and the score is read at the last token:
    # scored without it, a reply is judged at a position the model never learned to score.
    return text if not eos or text.endswith(eos) else text + eos


@functools.lru_cache(maxsize=4)
def load_reward_model(path: str):
    """The frozen reward model at ``path`` and its tokenizer, loaded once per process (cached).

    Its ``pad_token_id`` is set (the score is read at the last non-pad token); it runs on the
    GPU when there is one. The ``reward_model`` reward and PPO's token-level scorer share it.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _check_reward_model_path(path=path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    except (OSError, ValueError) as error:
        raise FluxError(f"cannot load reward model from '{path}': {str(error).strip().splitlines()[0]}") from None
    from flux_core.modeling import check_finite_weights

    check_finite_weights(model, path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The score is read at the last non-pad token, so the model must know the pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval().requires_grad_(False)
    if torch.cuda.is_available():
        model.to("cuda")
    return model, tokenizer


_load_reward_model = load_reward_model  # the name before it was public (same cache)


def _check_pattern(reward: str):
    def validate(*, pattern: str, **settings: Any) -> None:
        _compile(pattern, reward)

    return validate


def _check_reward_model_path(*, path: str, **settings: Any) -> None:
    from pathlib import Path

    from flux_core.modeling import check_is_a_reward_model

    if not (Path(path).expanduser() / "config.json").is_file():
        raise FluxError(f"reward model '{path}': no model directory there (expected a config.json)")
    check_is_a_reward_model(Path(path).expanduser())


def _check_length_target(*, target: Any, unit: str = "chars", **settings: Any) -> None:
    if isinstance(target, bool) or not isinstance(target, int) or target <= 0:
        raise FluxError(f"reward 'length_target': target must be a positive integer, not {target!r}")
    if unit not in ("chars", "words"):
        raise FluxError(f"reward 'length_target': unit must be 'chars' or 'words', not {unit!r}")


# Checked when the config is loaded (see RewardSpec), so a typo fails before any model loads.
regex_match.validate_settings = _check_pattern("regex_match")
format_check.validate_settings = _check_pattern("format_check")
pattern_fraction.validate_settings = _check_pattern("pattern_fraction")
length_target.validate_settings = _check_length_target
reward_model.validate_settings = _check_reward_model_path

BUILTIN_REWARDS = {
    "exact_match": exact_match,
    "regex_match": regex_match,
    "format_check": format_check,
    "length_target": length_target,
    "pattern_fraction": pattern_fraction,
    REWARD_MODEL: reward_model,
}


@hookimpl
def register_rewards(register):
    for name, fn in BUILTIN_REWARDS.items():
        register(name, fn)
