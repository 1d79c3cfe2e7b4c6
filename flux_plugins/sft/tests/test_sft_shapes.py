"""flux-sft on practitioners' data as their tools write it (ShareGPT, Alpaca, LLaMA-Factory's pairs, content parts,
tool calls), read without any mapping: each trains, and each renders the text a user expects, token for token what
raw TRL renders from the rows Flux made (raw TRL on ShareGPT itself keeps the roles ``human``/``gpt``)."""

import json
import shutil
from pathlib import Path

import pytest
from raw_trl import raw_trl_args
from shaped_rows import (
    WEATHER_TOOL,
    alpaca_pairs,
    alpaca_rows,
    answer,
    content_part_rows,
    question,
    sharegpt_pairs,
    sharegpt_rows,
    sharegpt_tool_rows,
)

from flux_core.trainer import FluxTrainer

SYSTEM = "Be helpful and polite."


@pytest.fixture
def config_for(tiny_model_dir, tmp_path):
    """A small fp32 SFT FluxConfig; ``algorithm`` adds algorithm keys, keyword arguments override top-level keys."""
    from flux_core.config import FluxConfig

    def make(algorithm: dict | None = None, **overrides):
        data = {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "outputs"),
            "num_steps": 3,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "max_length": 256,
            "precision": "fp32",
            "algorithm": {"name": "sft", "assistant_only_loss": False, **(algorithm or {})},
            **overrides,
        }
        return FluxConfig.from_dict(data)

    return make


@pytest.fixture
def tool_model_dir(tiny_model_dir, tmp_path) -> Path:
    """The tiny model with Qwen2.5's chat template (as TRL ships it), which renders tools and tool calls."""
    import trl
    from transformers import AutoTokenizer

    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "tool-model"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    tokenizer.save_pretrained(model)
    return model


def flux_examples(config, rows):
    """What Flux makes of ``rows`` (the SFT dataset) and its first example as Flux's SFTTrainer tokenizes it."""
    from flux_sft.runner import SFTRunner

    from flux_core.data.load import load_data

    dataset = load_data(rows, "sft")
    trainer = SFTRunner(config, show_progress=False).build_trainer(dataset, None)
    return dataset, trainer.train_dataset[0]


def raw_trl_example(config, rows):
    """The first example of ``rows`` as an unmodified trl.SFTTrainer tokenizes it."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=torch.float32)
    args = raw_trl_args(SFTConfig, config, 1, dataset_text_field="text")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(config.model_path),
    )
    return trainer.train_dataset[0]


def decoded(config, ids) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(config.model_path).decode(ids)


def trained_text(config, example) -> str:
    """The tokens of ``example`` that carry loss, decoded."""
    return decoded(config, [token for token, label in zip(example["input_ids"], example["labels"]) if label != -100])


SHAPES = {
    "sharegpt": lambda: sharegpt_rows(16),
    "sharegpt-pairs": lambda: sharegpt_pairs(16),  # trains on prompt + chosen
    "alpaca": lambda: alpaca_rows(16),
    "alpaca-system-history": lambda: alpaca_rows(16, system=True, history=True),
    "alpaca-pairs": lambda: alpaca_pairs(16),
    "content-parts": lambda: content_part_rows(16),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_practitioner_shape_trains(config_for, shape):
    result = FluxTrainer(config_for(), show_progress=False).fit(prompts=SHAPES[shape]())

    losses = result.metric("loss")
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_sharegpt_renders_user_and_assistant_turns_as_raw_trl_does_with_the_roles_mapped(config_for):
    config = config_for()
    rows = sharegpt_rows(2)
    dataset, flux = flux_examples(config, rows)

    expected = (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question(0)}<|im_end|>\n"
        f"<|im_start|>assistant\n{answer(0)}<|im_end|>\n<|im_start|>user\nThank you, and a short example?<|im_end|>\n"
        "<|im_start|>assistant\nExample 0: the model is clear.<|im_end|>\n"
    )
    assert decoded(config, flux["input_ids"]) == expected
    assert flux["input_ids"] == raw_trl_example(config, [{"messages": dataset[0]["messages"]}])["input_ids"]
    # Raw TRL on ShareGPT itself renames the keys but keeps the roles: the template writes "human" and "gpt".
    raw = decoded(config, raw_trl_example(config, [{"conversations": rows[0]["conversations"]}])["input_ids"])
    assert "<|im_start|>human\n" in raw and "<|im_start|>gpt\n" in raw
    assert "<|im_start|>human" not in decoded(config, flux["input_ids"])


def test_alpaca_renders_the_input_as_its_own_paragraph_and_trains_on_the_output(config_for):
    config = config_for()
    rows = alpaca_rows(2)
    dataset, flux = flux_examples(config, rows)

    prompt = f"{question(0)}\n\nContext 0: short and clear."
    assert decoded(config, flux["input_ids"]) == f"{prompt}{answer(0)}<|endoftext|>"
    assert trained_text(config, flux) == f"{answer(0)}<|endoftext|>"  # completion_only_loss: the output alone
    raw = raw_trl_example(config, [{"prompt": prompt, "completion": answer(0)}])
    assert flux["input_ids"] == raw["input_ids"] and flux["labels"] == raw["labels"]


def test_alpaca_with_system_and_history_renders_a_conversation_and_trains_on_the_last_answer(config_for):
    config = config_for()
    _, flux = flux_examples(config, alpaca_rows(2, system=True, history=True))

    assert decoded(config, flux["input_ids"]) == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nHello, can you help?<|im_end|>\n"
        "<|im_start|>assistant\nYes, I can help.<|im_end|>\n"
        f"<|im_start|>user\n{question(0)}\n\nContext 0: short and clear.<|im_end|>\n"
        f"<|im_start|>assistant\n{answer(0)}<|im_end|>\n"
    )
    assert trained_text(config, flux).startswith(answer(0))


def test_content_parts_render_as_their_joined_text(config_for):
    config = config_for()
    dataset, flux = flux_examples(config, content_part_rows(2))

    assert decoded(config, flux["input_ids"]) == (
        f"<|im_start|>user\n{question(0)} Now.<|im_end|>\n<|im_start|>assistant\n{answer(0)}<|im_end|>\n"
    )
    assert flux["input_ids"] == raw_trl_example(config, [{"messages": dataset[0]["messages"]}])["input_ids"]


def test_tool_calls_and_tools_render_through_a_template_that_supports_them(config_for, tool_model_dir):
    # Qwen's tool preamble is long in the tiny vocabulary: room for it, and small batches
    config = config_for(model_path=str(tool_model_dir), max_length=2048, batch_size=2)
    rows = sharegpt_tool_rows(2)
    dataset, flux = flux_examples(config, rows)

    text = decoded(config, flux["input_ids"])
    assert f"<tools>\n{json.dumps(WEATHER_TOOL)}\n</tools>" in text  # the tools column reached the template
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "c0"}}\n</tool_call>'
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n"
        '{"weather": "sunny"}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\nThe weather in city 0 is sunny.<|im_end|>\n"
    ) in text
    raw = raw_trl_example(config, [{"messages": dataset[0]["messages"], "tools": dataset[0]["tools"]}])
    assert flux["input_ids"] == raw["input_ids"]

    result = FluxTrainer(config, show_progress=False).fit(prompts=sharegpt_tool_rows(16))
    assert result.metric("loss")[-1] < result.metric("loss")[0]


def test_a_template_that_cannot_render_tool_calls_is_one_line_before_the_model_loads(config_for, monkeypatch):
    """The tiny model's ChatML template writes message['content'] only: it has no tool-call form."""
    from flux_core.errors import FluxError

    monkeypatch.setattr("flux_core.modeling.load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(FluxError) as info:
        flux_examples(config_for(), sharegpt_tool_rows(2))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"the chat template of '{config_for().model_path}' cannot render tool calls (row 1")
    assert message.endswith("use a model whose template supports them, or set chat_template")


def test_a_tools_column_the_template_ignores_is_a_warning(config_for):
    rows = [row | {"tools": json.dumps([WEATHER_TOOL])} for row in sharegpt_rows(2)]
    with pytest.warns(UserWarning, match=r"does not render tool schemas: the 'tools' column is ignored \(row 1"):
        flux_examples(config_for(), rows)


def test_unused_columns_are_one_warning_naming_the_shape(config_for):
    rows = [row | {"source": "alpaca-gpt4"} for row in alpaca_rows(8)]
    with pytest.warns(UserWarning) as seen:
        FluxTrainer(config_for(num_steps=1), show_progress=False).fit(prompts=rows)
    unused = [str(warning.message) for warning in seen if "not used by" in str(warning.message)]
    assert unused == [
        "data list: column 'source' is not used by sft (shape: alpaca); training ignores it "
        "(map a column that holds training text with data.columns)"
    ]
