"""`flux data` for SFT: the trained tokens are those SFTTrainer's labels keep with the run's loss settings
(completion only, assistant turns only, or every token), and it drops the rows SFTTrainer drops."""

import shutil
from pathlib import Path

import pytest

from flux_core.config import FluxConfig
from flux_core.data.preview import preview_data

MARKED_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "user", "content": "Hi there."},
    {"role": "assistant", "content": "Hello, friend."},
    {"role": "user", "content": "Bye."},
    {"role": "assistant", "content": "Goodbye."},
]


def sft_config(model_dir, algorithm: dict | None = None, **keys) -> FluxConfig:
    data = {"model_path": str(model_dir), "max_length": 128, "algorithm": {"name": "sft", **(algorithm or {})}}
    return FluxConfig.from_dict({**data, **keys})


@pytest.fixture
def marked_model(tiny_model_dir, tmp_path) -> Path:
    """The tiny model with a chat template that marks the assistant turns ({% generation %})."""
    from transformers import AutoTokenizer

    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "marked-model"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = MARKED_TEMPLATE
    tokenizer.save_pretrained(model)
    return model


def trainer_rows(config, records) -> list[dict]:
    """The rows SFTRunner's trainer (raw trl.SFTTrainer underneath) trains on."""
    from flux_sft.runner import SFTRunner

    from flux_core.data.load import load_data

    return list(SFTRunner(config, show_progress=False).build_trainer(load_data(records, "sft"), None).train_dataset)


def test_messages_train_the_assistant_turns_where_the_template_marks_them(marked_model):
    records = [{"messages": CONVERSATION}] * 4
    config = sft_config(marked_model)

    preview = preview_data(config, records, num_examples=1)

    (sequence,) = preview.examples[0].sequences
    assert sequence.trained == ["Hello, friend.<|im_end|>", "Goodbye.<|im_end|>"]
    assert "<|im_start|>user\nHi there.<|im_end|>" in sequence.text
    assert preview.shape == "messages (chat)" and preview.warnings == ()

    everything = preview_data(sft_config(marked_model, {"assistant_only_loss": False}), records, num_examples=1)
    (sequence,) = everything.examples[0].sequences
    assert sequence.trained == [sequence.text]


def test_the_trained_tokens_are_the_tokens_sft_trainer_labels(marked_model):
    """Parity with the trainer a run builds: the same ids, and a label exactly where the preview marks one."""
    from transformers import AutoTokenizer

    from flux_core.data.load import load_data
    from flux_core.registry import get_registry

    records = [{"messages": CONVERSATION[: 2 * (i % 2 + 1)]} for i in range(4)]
    config = sft_config(marked_model)
    tokenizer = AutoTokenizer.from_pretrained(marked_model)
    view = get_registry().get_algorithm("sft").load_preview()(config, tokenizer, load_data(records, "sft"))

    for row, trained in zip(view.dataset, trainer_rows(config, records)):
        assert row["text_input_ids"] == trained["input_ids"]
        assert row["text_trained"] == [int(label != -100) for label in trained["labels"]]


def test_completion_only_loss_decides_whether_the_prompt_is_trained(tiny_model_dir):
    records = [{"prompt": "Explain the moon landing.", "completion": " Certainly, here it is."}] * 4

    (sequence,) = preview_data(sft_config(tiny_model_dir), records, 1).examples[0].sequences
    assert sequence.trained == [" Certainly, here it is.<|endoftext|>"]
    assert sequence.text == "Explain the moon landing. Certainly, here it is.<|endoftext|>"

    everything = preview_data(sft_config(tiny_model_dir, {"completion_only_loss": False}), records, 1)
    assert everything.examples[0].sequences[0].trained == [sequence.text]


def test_assistant_only_loss_auto_warns_in_the_preview_where_the_template_cannot(tiny_model_dir):
    records = [{"messages": CONVERSATION}] * 2

    preview = preview_data(sft_config(tiny_model_dir), records, 1)

    (warning,) = preview.warnings
    assert "assistant_only_loss auto: the chat template" in warning
    (sequence,) = preview.examples[0].sequences
    assert sequence.trained == [sequence.text]


@pytest.mark.filterwarnings("ignore:.*column 'index' is not used")
def test_rows_the_preview_drops_are_those_sft_trainer_drops(tiny_model_dir):
    """A prompt that fills max_length leaves no completion token: SFTTrainer drops the row, and so says the preview."""
    records = [
        {"prompt": "Q" + " and more" * (i % 3) * 4 + "?", "completion": " An answer.", "index": i} for i in range(8)
    ]
    config = sft_config(tiny_model_dir, max_length=12)

    preview = preview_data(config, records, num_examples=len(records))
    kept = {row["index"] for row in trainer_rows(config, records)}

    assert 0 < len(kept) < len(records)
    assert {example.row for example in preview.examples if not example.dropped} == kept
    assert preview.summary.dropped == {
        "no trained token within max_length 12 (the prompt fills it)": len(records) - len(kept)
    }


def test_packing_cuts_at_max_length_and_drops_nothing(tiny_model_dir):
    records = [{"prompt": "Q" + " and more" * 8 + "?", "completion": " An answer."}] * 2

    preview = preview_data(sft_config(tiny_model_dir, {"packing": True}, max_length=12), records, 1)

    assert preview.summary.dropped == {} and preview.summary.longer == 2
    assert preview.examples[0].sequences[0].cut_tokens > 0
    assert preview.note.startswith("packing (bfd)")
