"""flux-kto on practitioners' data read without any mapping: whole conversations with a label (LLaMA-Factory's
kto_en_demo, ShareGPT + label), Alpaca + label, and LLaMA-Factory's ShareGPT and Alpaca pairs. The completion KTO
scores is the last assistant turn, the prompt every turn before it, token for token as raw TRL tokenizes those rows."""

import pytest
from raw_trl import raw_trl_args
from shaped_rows import alpaca_pairs, alpaca_rows, answer, kto_conversations, question, sharegpt_pairs, write_jsonl

from flux_core.data.load import load_data
from flux_core.trainer import FluxTrainer


def kto_config(dpo_config, **overrides):
    return dpo_config({"name": "kto", "beta": 0.1}, num_steps=3, precision="fp32", max_length=256, **overrides)


def sharegpt_with_labels(count: int) -> list[dict]:
    """ShareGPT conversations with a KTO label, as LLaMA-Factory documents KTO data in its ShareGPT format."""
    rows = []
    for row in kto_conversations(count):
        turns = [
            {"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]} for m in row["messages"]
        ]
        rows.append({"conversations": turns, "label": row["label"]})
    return rows


def alpaca_with_labels(count: int) -> list[dict]:
    """LLaMA-Factory's Alpaca KTO rows: ``kto_tag`` holds the label (mapped with data.columns)."""
    return [row | {"kto_tag": index % 2 == 0} for index, row in enumerate(alpaca_rows(count))]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_a_conversation_with_a_label_scores_its_last_assistant_turn(dpo_config):
    from datasets import Dataset
    from flux_kto.runner import KTORunner
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    config = kto_config(dpo_config)
    for rows in (kto_conversations(4), sharegpt_with_labels(4)):
        dataset = load_data(rows, "unpaired")
        assert dataset[0] == {
            "prompt": [user(question(0)), assistant("Which part?"), user("The simple part.")],
            "completion": [assistant(answer(0))],
            "label": True,
        }
        assert dataset["label"] == [True, False, True, False]

    runner = KTORunner(config, show_progress=False)
    flux = runner.build_trainer(dataset, None).train_dataset[0]
    assert runner.tokenizer.decode(flux["completion_ids"]) == f"{answer(0)}<|im_end|>\n"
    assert runner.tokenizer.decode(flux["prompt_ids"]).endswith(
        "<|im_start|>user\nThe simple part.<|im_end|>\n<|im_start|>assistant\n"
    )
    model = AutoModelForCausalLM.from_pretrained(config.model_path)
    raw = KTOTrainer(
        model=model,
        args=raw_trl_args(KTOConfig, config, 1, beta=0.1),
        train_dataset=Dataset.from_list(dataset.to_list()),
        processing_class=AutoTokenizer.from_pretrained(config.model_path),
    ).train_dataset[0]
    assert (flux["prompt_ids"], flux["completion_ids"]) == (raw["prompt_ids"], raw["completion_ids"])


SHAPES = {
    "messages-label": lambda: (kto_conversations(16), None),
    "sharegpt-label": lambda: (sharegpt_with_labels(16), None),
    "alpaca-kto_tag": lambda: (alpaca_with_labels(16), {"label": "kto_tag"}),
    "sharegpt-pairs": lambda: (sharegpt_pairs(8), None),
    "alpaca-pairs": lambda: (alpaca_pairs(8), None),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_practitioner_shape_trains(dpo_config, tmp_path, shape):
    rows, columns = SHAPES[shape]()
    source = {"path": write_jsonl(tmp_path / "kto.jsonl", rows), "columns": columns or {}}

    result = FluxTrainer(kto_config(dpo_config, batch_size=8), show_progress=False).fit(prompts=source)

    losses = result.metric("loss")
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_alpaca_with_a_label_keeps_the_input():
    dataset = load_data(alpaca_with_labels(2), "unpaired", columns={"label": "kto_tag"})
    assert dataset[0] == {
        "prompt": f"{question(0)}\n\nContext 0: short and clear.",
        "completion": answer(0),
        "label": True,
    }


def test_a_conversation_that_goes_on_after_its_last_reply_is_named():
    from flux_core.errors import DataError

    rows = kto_conversations(2)
    rows[1]["messages"].append(user("And then?"))
    with pytest.raises(DataError) as info:
        load_data(rows, "unpaired")
    assert str(info.value) == (
        "data list item 2: 'messages' goes on after its last assistant turn; end it with the assistant reply that "
        "is the completion"
    )
