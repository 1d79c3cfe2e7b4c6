"""chat_template: a built-in name, a .jinja file or a model directory changes how chat data is rendered;
chat data without any template is one line naming the key, before a model loads."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from make_preferences import make_shaped_pairs

from flux_core.chat_templates import BUILTIN_NAMES, CHATML, LLAMA_2, builtin_chat_template
from flux_core.config import FluxConfig
from flux_core.errors import ConfigError
from flux_core.modeling import load_tokenizer
from flux_core.trainer import FluxTrainer

CONVERSATION = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]
# What each family's template makes of CONVERSATION's user turn (from the official templates' formats).
USER_TURN = {
    "chatml": "<|im_start|>user\nHi there<|im_end|>\n",
    "llama-2": "[INST] Hi there [/INST] Hello ",
    "llama-3": "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
    "llama-3.1": "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
    "gemma": "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n",
    "qwen2.5": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.",
    "qwen3": "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The tiny model's tokenizer alone (ChatML template in chat_template.jinja); no model weights."""
    from flux_core.testing import build_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    tokenizer = build_tokenizer()
    tokenizer.bos_token = "<|endoftext|>"  # the Llama and Gemma templates start with one
    tokenizer.save_pretrained(directory)
    assert (directory / "chat_template.jinja").is_file()
    return directory


def without_template(source: Path, target: Path) -> Path:
    """A copy of ``source`` whose tokenizer has no chat template (a base model)."""
    shutil.copytree(source, target)
    (target / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = target / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text())
    settings.pop("chat_template", None)
    tokenizer_config.write_text(json.dumps(settings))
    return target


def render(tokenizer) -> str:
    return tokenizer.apply_chat_template(CONVERSATION, tokenize=False)


# Families whose markers the tiny tokenizer lacks: a warning says so.
FOREIGN_MARKERS = {
    "llama-3": "<|eot_id|>",
    "llama-3.1": "<|eot_id|>",
    "gemma": "<start_of_turn>",
    "qwen3": "<think>",  # Qwen3 renders an empty reasoning block before the answer
}


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_built_in_template_renders_its_familys_turns(name, tokenizer_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenizer = load_tokenizer(str(tokenizer_dir), name)
    assert tokenizer.chat_template == builtin_chat_template(name)
    assert USER_TURN[name] in render(tokenizer)
    messages = [str(warning.message) for warning in caught]
    if name in FOREIGN_MARKERS:
        assert len(messages) == 1 and FOREIGN_MARKERS[name] in messages[0]
        assert messages[0].startswith(f"chat_template {name}: ") and "not tokens of the tokenizer" in messages[0]
    else:
        assert messages == []


def test_a_template_the_tokenizer_cannot_render_is_one_line(tmp_path):
    from flux_core.testing import build_tokenizer

    build_tokenizer().save_pretrained(tmp_path)  # no bos_token, as Qwen's tokenizers
    with pytest.raises(
        ConfigError,
        match=r"^chat_template: llama-3 cannot render a conversation with the tokenizer "
        r"of '.*': 'bos_token' is undefined; pick the template of its model family$",
    ):
        load_tokenizer(str(tmp_path), "llama-3")


def test_the_trl_shipped_templates_are_the_ones_trl_recognises(tokenizer_dir):
    """TRL swaps in its training version (assistant masks) for templates it recognises, so a built-in
    Qwen3 template gets SFT's assistant_only_loss."""
    from trl.chat_template_utils import get_training_chat_template

    with pytest.warns(UserWarning, match="<think> are not tokens"):  # the tiny tokenizer is no Qwen3's
        tokenizer = load_tokenizer(str(tokenizer_dir), "qwen3")
    assert get_training_chat_template(tokenizer)


def test_a_jinja_file_and_a_model_directory_replace_the_tokenizers_own_template(tokenizer_dir, tmp_path):
    own = render(load_tokenizer(str(tokenizer_dir)))
    assert own.startswith("<|im_start|>user")

    template_file = tmp_path / "plain.jinja"
    template_file.write_text("{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}")
    assert render(load_tokenizer(str(tokenizer_dir), str(template_file))) == "USER: Hi there\nASSISTANT: Hello\n"

    llama_dir = tmp_path / "llama-like"  # transformers 5 saves the template as chat_template.jinja
    tokenizer = load_tokenizer(str(tokenizer_dir), "llama-2")
    tokenizer.save_pretrained(llama_dir)
    borrowed = render(load_tokenizer(str(tokenizer_dir), str(llama_dir)))
    assert borrowed != own and "[INST] Hi there [/INST]" in borrowed

    older = without_template(llama_dir, tmp_path / "older")  # older models keep it in tokenizer_config.json
    settings = json.loads((older / "tokenizer_config.json").read_text())
    settings["chat_template"] = [{"name": "default", "template": LLAMA_2}, {"name": "tool_use", "template": CHATML}]
    (older / "tokenizer_config.json").write_text(json.dumps(settings))
    assert render(load_tokenizer(str(tokenizer_dir), str(older))) == borrowed


def test_a_bad_chat_template_setting_is_one_line_naming_the_key(tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"^config: chat_template: 'chatlm' is not .*\(did you mean 'chatml'\?\)$"):
        FluxConfig.from_dict({"model_path": "m", "chat_template": "chatlm", "algorithm": {"name": "dpo"}})
    with pytest.raises(ConfigError, match=r"^chat_template: .*missing.jinja: file not found$"):
        load_tokenizer(str(tokenizer_dir), str(tmp_path / "missing.jinja"))
    base = without_template(tokenizer_dir, tmp_path / "base")
    with pytest.raises(ConfigError, match=r"^chat_template: .*base holds no chat template \(no chat_template.jinja"):
        load_tokenizer(str(tokenizer_dir), str(base))


@pytest.mark.parametrize(
    ("algorithm", "rows", "column"),
    [
        ("dpo", make_shaped_pairs(8, seed=0, shape="conversational"), "prompt"),
        ("sft", [{"messages": CONVERSATION}] * 8, "messages"),
    ],
)
def test_chat_data_on_a_tokenizer_without_a_template_is_refused_before_the_model_loads(
    algorithm, rows, column, tiny_model_dir, tmp_path, monkeypatch
):
    import importlib

    runner = importlib.import_module(f"flux_{algorithm}.runner")
    never = lambda *args, **kwargs: pytest.fail("a model was loaded")  # noqa: E731
    monkeypatch.setattr("flux_core.modeling.load_model", never)  # TRLRunner.load_tokenizer_and_policy's
    monkeypatch.setattr(runner, "load_model", never, raising=False)  # a runner that loads it itself (dpo)
    base = without_template(tiny_model_dir, tmp_path / "base")
    config = FluxConfig.from_dict(
        {"model_path": str(base), "output_dir": str(tmp_path / "out"), "num_steps": 1, "algorithm": {"name": algorithm}}
    )
    with pytest.raises(ConfigError) as error:
        FluxTrainer(config, show_progress=False).fit(prompts=rows)
    message = str(error.value)
    assert message.startswith(f"chat_template: data column '{column}' holds chat messages but the tokenizer")
    assert f"the tokenizer of '{base}' has no chat template; set chat_template to" in message and "\n" not in message


def test_the_chosen_template_trains_travels_with_checkpoints_and_generates(tiny_model_dir, tmp_path):
    base = without_template(tiny_model_dir, tmp_path / "base")
    config = FluxConfig.from_dict(
        {
            "model_path": str(base),
            "output_dir": str(tmp_path / "out"),
            "num_steps": 1,
            "batch_size": 4,
            "max_length": 64,
            "chat_template": "chatml",
            "algorithm": {"name": "sft", "assistant_only_loss": False},
        }
    )
    trainer = FluxTrainer(config, show_progress=False)
    trainer.fit(prompts=[{"messages": CONVERSATION}] * 4)
    for name in ("final", "best"):
        assert load_tokenizer(str(tmp_path / "out" / name)).chat_template == CHATML
    fresh = FluxTrainer(config, show_progress=False)
    assert isinstance(fresh.generate([CONVERSATION[0]], max_new_tokens=2), str)
    assert fresh.tokenizer.chat_template == CHATML  # generate() on the base model renders with the setting
