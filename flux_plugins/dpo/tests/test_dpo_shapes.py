"""flux-dpo on LLaMA-Factory's preference pairs read without any mapping: ShareGPT pairs (a ``conversations``
prompt, ``chosen``/``rejected`` one ``{from, value}`` message each; raw TRL 1.16 fails on them with ``KeyError 0``)
and Alpaca pairs (instruction and input, chosen/rejected strings). Each trains with per-step losses equal to raw
TRL DPOTrainer's on the rows Flux made, and renders the roles and the input a user expects."""

import pytest
from raw_trl import raw_trl_args
from raw_trl import raw_trl_losses as train_raw_trl
from shaped_rows import alpaca_pairs, answer, question, sharegpt_pairs, sharegpt_tool_rows

from flux_core.data.load import load_data
from flux_core.trainer import FluxTrainer

STEPS = 3
SHAPES = {
    "sharegpt-pairs": lambda: sharegpt_pairs(16),
    "alpaca-pairs": lambda: alpaca_pairs(16),
    "alpaca-pairs-system": lambda: [pair | {"system": "Be brief."} for pair in alpaca_pairs(16)],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_llama_factory_pairs_train_as_raw_trl_does_on_the_rows_flux_made(dpo_config, shape):
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    config = dpo_config(num_steps=STEPS, precision="fp32", max_length=256)
    rows = SHAPES[shape]()

    flux_losses = FluxTrainer(config, show_progress=False).fit(prompts=rows).metric("loss")
    model = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=torch.float32)
    args = raw_trl_args(DPOConfig, config, STEPS, beta=config.algorithm.beta, loss_type=["sigmoid"])
    trl_losses = train_raw_trl(
        DPOTrainer, args, model, config.model_path, load_data(rows, "preferences").to_list(), False
    )

    assert flux_losses == pytest.approx(trl_losses, abs=1e-5)
    assert len(flux_losses) == STEPS and flux_losses[-1] < flux_losses[0]


def test_sharegpt_pairs_render_the_conversation_as_user_and_assistant_turns(dpo_config):
    from flux_dpo.runner import DPORunner

    runner = DPORunner(dpo_config(max_length=256), show_progress=False)
    example = runner.build_trainer(load_data(sharegpt_pairs(8), "preferences"), None).train_dataset[0]

    assert runner.tokenizer.decode(example["prompt_ids"]) == (
        f"<|im_start|>user\n{question(0)}<|im_end|>\n<|im_start|>assistant\nWhich part?<|im_end|>\n"
        "<|im_start|>user\nThe simple part.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert runner.tokenizer.decode(example["chosen_ids"]) == f"{answer(0)}<|im_end|>\n"
    assert runner.tokenizer.decode(example["rejected_ids"]) == f"{answer(0, good=False)}<|im_end|>\n"


def test_alpaca_pairs_render_the_input_as_its_own_paragraph(dpo_config):
    from flux_dpo.runner import DPORunner

    runner = DPORunner(dpo_config(max_length=256), show_progress=False)
    example = runner.build_trainer(load_data(alpaca_pairs(8), "preferences"), None).train_dataset[0]

    assert runner.tokenizer.decode(example["prompt_ids"]) == f"{question(0)}\n\nContext 0: short and clear."
    assert runner.tokenizer.decode(example["chosen_ids"]) == f"{answer(0)}<|endoftext|>"


def test_tool_call_pairs_a_template_cannot_render_are_one_line_before_the_model_loads(dpo_config, monkeypatch):
    """The tiny model's ChatML template writes message['content'] only: it has no tool-call form."""
    import flux_dpo.runner
    from flux_dpo.runner import DPORunner

    from flux_core.errors import FluxError

    pairs = [
        {
            "conversations": row["conversations"][:3],
            "chosen": row["conversations"][3],
            "rejected": {"from": "gpt", "value": "No."},
        }
        for row in sharegpt_tool_rows(4)
    ]
    monkeypatch.setattr(flux_dpo.runner, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    config = dpo_config()
    with pytest.raises(
        FluxError, match=rf"^the chat template of '{config.model_path}' cannot render tool calls \(row 1"
    ):
        DPORunner(config, show_progress=False).build_trainer(load_data(pairs, "preferences"), None)
