"""The ``chat_template:`` setting: which Jinja chat template renders chat-message data.

A tokenizer's chat template turns ``[{"role": ..., "content": ...}]`` lists into the text a
model trains on and is prompted with. Base models often ship none, and a template borrowed
from another model is a common need, so ``chat_template:`` takes:

- a built-in name (:data:`BUILTIN_NAMES`): ``chatml`` and ``llama-2`` are written here; the
  others are the official templates that TRL ships byte for byte in ``trl/chat_templates/``
  (it recognises models by them, and its CI compares them with the hub), so TRL's own
  training versions (``{% generation %}`` markers for SFT's ``assistant_only_loss``) apply;
- a ``.jinja`` file;
- a model directory (its ``chat_template.jinja``, or ``chat_template`` in
  ``tokenizer_config.json``) or a hub id (its tokenizer's template);
- the template text itself (anything containing ``{%`` or ``{{``).

:func:`flux_core.modeling.load_tokenizer` applies it; ``save_pretrained`` then writes it
into every checkpoint, so the template travels with the model.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from flux_core.errors import ConfigError, close_match

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# meta-llama/Llama-2-*-chat-hf's template: [INST] turns, an optional <<SYS>> block in the first one.
LLAMA_2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

OWN_TEMPLATES = {"chatml": CHATML, "llama-2": LLAMA_2}
# Built-in name -> the file (without .jinja) in trl/chat_templates/ holding that family's official template.
TRL_TEMPLATES = {
    "llama-3": "llama3",
    "llama-3.1": "llama3_1",
    "gemma": "gemma",
    "qwen2.5": "qwen2_5",
    "qwen3": "qwen3",
}
BUILTIN_NAMES = (*OWN_TEMPLATES, *TRL_TEMPLATES)

# What a chosen template must render with the tokenizer it is given to.
PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
# Columns that TRL renders with the chat template when they hold chat messages.
CHAT_COLUMNS = ("messages", "prompt", "completion", "chosen", "rejected")
_OPTIONS = "a built-in name (" + ", ".join(BUILTIN_NAMES) + "), a .jinja file, or a model directory or hub id"


def _is_template_text(value: str) -> bool:
    return "{%" in value or "{{" in value


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).expanduser().exists()


def check_chat_template_setting(value: str) -> None:
    """Raise ``ValueError`` (reported at the ``chat_template`` key) for a value that is none of the
    accepted forms: a misspelled built-in name gets the closest one. Files are read later."""
    if value in BUILTIN_NAMES or _is_template_text(value) or value.endswith(".jinja"):
        return
    if _looks_like_path(value) or "/" in value:  # a directory, or a hub id (org/name)
        return
    raise ValueError(f"'{value}' is not {_OPTIONS}{close_match(value, BUILTIN_NAMES)}")


def builtin_chat_template(name: str) -> str:
    """The text of the built-in template ``name`` (one of :data:`BUILTIN_NAMES`)."""
    if name in OWN_TEMPLATES:
        return OWN_TEMPLATES[name]
    from importlib.resources import files

    return (files("trl") / "chat_templates" / f"{TRL_TEMPLATES[name]}.jinja").read_text(encoding="utf-8")


def resolve_chat_template(value: str) -> str:
    """The Jinja text that the ``chat_template`` setting ``value`` names; a ConfigError when there is none."""
    if _is_template_text(value):
        return value
    if value in BUILTIN_NAMES:
        return builtin_chat_template(value)
    path = Path(value).expanduser()
    if value.endswith(".jinja"):
        if not path.is_file():
            raise ConfigError(f"chat_template: {value}: file not found")
        return path.read_text(encoding="utf-8")
    if _looks_like_path(value):
        if not path.is_dir():
            raise ConfigError(f"chat_template: {value}: not a .jinja file or a model directory")
        return _template_in_directory(path)
    return _template_of_hub_tokenizer(value)


def _template_in_directory(directory: Path) -> str:
    """The template saved in a model directory: ``chat_template.jinja`` (transformers 5), else the
    ``chat_template`` of ``tokenizer_config.json`` (a string, or named templates: the ``default`` one)."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config_file = directory / "tokenizer_config.json"
    template = None
    if config_file.is_file():
        try:
            template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
        except (ValueError, AttributeError):
            raise ConfigError(f"chat_template: {config_file}: not valid JSON") from None
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        raise ConfigError(
            f"chat_template: {directory} holds no chat template (no chat_template.jinja, no chat_template in "
            "tokenizer_config.json); give a built-in name or a .jinja file"
        )
    return template


def _template_of_hub_tokenizer(hub_id: str) -> str:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(hub_id)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"chat_template: cannot load the tokenizer of '{hub_id}' (offline?): {_first_line(error)}"
        ) from None
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        raise ConfigError(f"chat_template: the tokenizer of '{hub_id}' has no chat template")
    return template


def set_chat_template(tokenizer: Any, value: str | None, model_path: str = "the model") -> Any:
    """Give ``tokenizer`` the template the ``chat_template`` setting names (``None``: keep its own).

    The template must render a user/assistant exchange with this tokenizer (a ConfigError
    otherwise, e.g. ``'bos_token' is undefined`` for a Llama template on a tokenizer without
    one); markers such as ``<|eot_id|>`` that are not tokens of this tokenizer are warned about:
    the model would see them as several pieces of text.
    """
    if value is None:
        return tokenizer
    tokenizer.chat_template = resolve_chat_template(value)
    try:
        text = tokenizer.apply_chat_template(PROBE, tokenize=False)
    except Exception as error:  # noqa: BLE001 - Jinja's own errors, and the template's raise_exception
        raise ConfigError(
            f"chat_template: {_label(value)} cannot render a conversation with the tokenizer of '{model_path}': "
            f"{_first_line(error)}; pick the template of its model family"
        ) from None
    vocabulary = tokenizer.get_vocab()
    missing = sorted({marker for marker in re.findall(r"<[^\s<>]{1,40}>", text) if marker not in vocabulary})
    if missing:
        verb = "is not a token" if len(missing) == 1 else "are not tokens"
        warnings.warn(
            f"chat_template {_label(value)}: {', '.join(missing)} {verb} of the tokenizer of '{model_path}', so the "
            "model sees each as several pieces of text; pick the "
            "template of its model family, or add them as special tokens",
            UserWarning,
            stacklevel=2,
        )
    return tokenizer


def _label(value: str) -> str:
    return "(the template text given)" if _is_template_text(value) else value


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def first_chat_column(datasets: dict[str, Any]) -> tuple[str, str] | None:
    """``(what, column)`` of the first column that TRL renders with the chat template and that holds chat
    messages, in ``{"data": dataset, "eval_data": dataset_or_None}``; read from the Arrow schema only."""
    from flux_core.data.formats import CHAT, column_kind

    for what, dataset in datasets.items():
        if dataset is None:
            continue
        for column in CHAT_COLUMNS:
            if column in dataset.column_names and column_kind(dataset, column) == CHAT:
                return what, column
    return None


def check_has_chat_template(tokenizer: Any, model_path: str, found: tuple[str, str]) -> None:
    """Raise a ConfigError when chat-message data (``found``, from :func:`first_chat_column`) meets a
    tokenizer without a chat template."""
    if tokenizer.chat_template:
        return
    what, column = found
    raise ConfigError(
        f"chat_template: {what} column '{column}' holds chat messages but the tokenizer of '{model_path}' has no "
        f"chat template; set chat_template to {_OPTIONS} (e.g. chat_template: chatml)"
    )
