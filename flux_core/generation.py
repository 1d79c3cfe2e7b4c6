"""Generation from a model: the options of ``flux generate`` / ``flux chat`` / ``FluxTrainer.generate``.

A text prompt becomes a user message in the model's chat template (with the generation
prompt) when its tokenizer has one, so a chat model is asked the way it was tuned;
``raw=True`` feeds the text as it is (a base model, or one trained on raw-text prompts as
TRL trains string prompts). Greedy unless a temperature above 0 asks for sampling.
"""

from __future__ import annotations

from typing import Any

from flux_core.errors import FluxError


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# Each option's valid values, and how an error says so.
_VALID = {
    "max_new_tokens": (_whole_number, "a whole number >= 1"),
    "temperature": (lambda value: 0 <= value < float("inf"), "0 (greedy) or a positive number"),
    "top_p": (lambda value: 0 < value <= 1, "in (0, 1]"),
    "top_k": (_whole_number, "a whole number >= 1"),
    "repetition_penalty": (lambda value: 0 < value < float("inf"), "a positive number (1 = off)"),
    "num_samples": (_whole_number, "a whole number >= 1"),
}


def generation_settings(
    *,
    max_new_tokens: int = 64,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    num_samples: int = 1,
    **generate_kwargs: Any,
) -> dict[str, Any]:
    """``model.generate`` keyword arguments from the options of ``flux generate`` / ``flux chat``.

    Greedy unless ``temperature`` is above 0 (0 or ``None``: greedy) or ``do_sample=True`` is
    passed. ``top_p``, ``top_k`` and ``num_samples`` > 1 need sampling: asking for them greedily
    is a one-line ``FluxError``, not an option transformers ignores. Other keyword arguments go
    to ``generate`` as they are.
    """
    options = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "repetition_penalty": repetition_penalty,
        "num_samples": num_samples,
    }
    for name, value in options.items():
        valid, expected = _VALID[name]
        if value is not None and not valid(value):
            raise FluxError(f"{name} must be {expected}, not {value!r}")
    sampling = bool(temperature) or bool(generate_kwargs.get("do_sample"))
    needs_sampling = [name for name in ("top_p", "top_k") if options[name] is not None]
    needs_sampling += ["num_samples"] if num_samples > 1 else []
    if needs_sampling and not sampling:
        raise FluxError(
            f"{needs_sampling[0]} only applies when sampling (greedy decoding has one answer): "
            "set a temperature above 0 (e.g. 0.7)"
        )
    settings: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sampling}
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        if options[name]:
            settings[name] = options[name]
    if num_samples > 1:
        settings["num_return_sequences"] = num_samples
    settings.update(generate_kwargs)
    return settings


def check_prompt(prompt: Any) -> None:
    """Raise a one-line ``FluxError`` for an empty prompt (transformers fails on it with a reshape error)."""
    if not prompt or (isinstance(prompt, str) and not prompt.strip()):
        raise FluxError("the prompt is empty: give the text (or chat messages) to answer")


def prompt_ids(tokenizer: Any, prompt: str | list[dict[str, str]], *, raw: bool = False, system: str | None = None):
    """The token ids (a 1 x N tensor) the model is asked to continue.

    A text prompt becomes a user message in the tokenizer's chat template, with the generation
    prompt, when the tokenizer has a template; ``raw=True`` (or a tokenizer without one)
    tokenizes the text as it is. Chat messages always go through the template; ``system``
    puts a system message first.
    """
    check_prompt(prompt)
    template = getattr(tokenizer, "chat_template", None)
    if raw or (template is None and isinstance(prompt, str)):
        if not isinstance(prompt, str):
            raise FluxError("raw takes a text prompt; chat messages need the chat template (drop raw)")
        if system is not None:
            reason = "drop raw (--raw)" if raw else "this tokenizer has no chat template"
            raise FluxError(f"a system prompt goes through the chat template: {reason}")
        return tokenizer(prompt, return_tensors="pt").input_ids
    if template is None:
        raise FluxError("chat messages need a chat template and this tokenizer has none (tokenizer.chat_template)")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system is not None:
        messages = [{"role": "system", "content": system}, *messages]
    try:
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    except Exception as error:  # jinja2's TemplateError, e.g. "System role not supported"
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FluxError(f"the chat template cannot format these messages: {detail}") from None
    return encoded.input_ids


def generate_samples(
    model: Any,
    tokenizer: Any,
    prompt: str | list[dict[str, str]],
    *,
    raw: bool = False,
    system: str | None = None,
    streamer: Any = None,
    **options: Any,
) -> list[str]:
    """Completions of one prompt (see :func:`prompt_ids` and :func:`generation_settings`): one,
    or ``num_samples``. ``streamer`` (e.g. transformers' ``TextStreamer``) sees tokens as they come."""
    import torch

    settings = generation_settings(**options)
    settings.setdefault("pad_token_id", tokenizer.pad_token_id)
    input_ids = prompt_ids(tokenizer, prompt, raw=raw, system=system)
    if input_ids.shape[1] == 0:
        raise FluxError("the prompt is empty after tokenization (0 tokens): give some text")
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(context, int) and input_ids.shape[1] + settings["max_new_tokens"] > context:
        raise FluxError(
            f"the prompt ({input_ids.shape[1]} tokens) and max_new_tokens ({settings['max_new_tokens']}) do not fit "
            f"the model's context of {context} tokens"
        )
    input_ids = input_ids.to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer, **settings)
    finally:
        model.train(was_training)
    return [tokenizer.decode(row[input_ids.shape[1] :], skip_special_tokens=True) for row in output]
