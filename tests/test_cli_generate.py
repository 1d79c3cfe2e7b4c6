"""`flux generate`, `flux chat` and `FluxTrainer.generate`: the chat template (unless --raw), the sampling
options as transformers' `generate` receives them, several samples, and the multi-turn chat loop."""

import io
import shutil
import sys

import pytest

from flux import FluxConfig, FluxTrainer
from flux_core.cli import main
from flux_core.errors import FluxError

PROMPT = "Explain jazz music."


@pytest.fixture
def generate_calls(monkeypatch):
    """Every call of transformers' ``generate``: the prompt's token ids, its keyword arguments and the
    completion's token ids. The real ``generate`` still runs."""
    from transformers.generation.utils import GenerationMixin

    calls = []
    original = GenerationMixin.generate

    def spy(self, input_ids=None, **kwargs):
        output = original(self, input_ids, **kwargs)
        prompt = input_ids[0].tolist()
        completions = [row[len(prompt) :].tolist() for row in output]
        calls.append({"prompt": prompt, "completions": completions, **kwargs})
        return output

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    return calls


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def templated(tokenizer, messages) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])


def flux(capsys, *args) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


# ------------------------------------------------------------------ flux generate


def test_generate_asks_through_the_chat_template_and_raw_skips_it(tiny_model_dir, tokenizer, generate_calls, capsys):
    status, out, _ = flux(capsys, "generate", str(tiny_model_dir), PROMPT, "--max-new-tokens", "6")
    assert status == 0
    assert generate_calls[0]["prompt"] == templated(tokenizer, [{"role": "user", "content": PROMPT}])
    assert out == tokenizer.decode(generate_calls[0]["completions"][0], skip_special_tokens=True) + "\n"

    assert flux(capsys, "generate", str(tiny_model_dir), PROMPT, "--raw", "--max-new-tokens", "6")[0] == 0
    assert generate_calls[1]["prompt"] == tokenizer(PROMPT).input_ids  # the text as it is

    system = ["--system", "Answer in one word."]
    assert flux(capsys, "generate", str(tiny_model_dir), PROMPT, *system, "--max-new-tokens", "6")[0] == 0
    expected = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": PROMPT}]
    assert generate_calls[2]["prompt"] == templated(tokenizer, expected)


def test_greedy_generate_is_raw_transformers_greedy_decoding(tiny_model_dir, tokenizer, capsys):
    import torch
    from transformers import AutoModelForCausalLM

    status, out, _ = flux(capsys, "generate", str(tiny_model_dir), PROMPT, "--max-new-tokens", "12")
    assert status == 0
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.tensor([templated(tokenizer, [{"role": "user", "content": PROMPT}])])
    with torch.no_grad():
        output = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    assert out == tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True) + "\n"


def test_sampling_options_reach_generate_and_num_samples_prints_each(tiny_model_dir, generate_calls, capsys):
    assert flux(capsys, "generate", str(tiny_model_dir), PROMPT, "--max-new-tokens", "4")[0] == 0
    greedy = generate_calls[0]
    assert greedy["do_sample"] is False and greedy["max_new_tokens"] == 4
    assert not {"temperature", "top_p", "top_k", "num_return_sequences"} & greedy.keys()

    options = ["--temperature", "0.7", "--top-p", "0.9", "--top-k", "20", "--repetition-penalty", "1.3"]
    status, out, _ = flux(capsys, "generate", str(tiny_model_dir), PROMPT, *options, "--num-samples", "3")
    assert status == 0
    sampled = generate_calls[1]
    assert (sampled["do_sample"], sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (True, 0.7, 0.9, 20)
    assert sampled["repetition_penalty"] == 1.3 and sampled["num_return_sequences"] == 3
    assert len(sampled["completions"]) == 3
    assert [line for line in out.splitlines() if line.startswith("--- sample")] == [
        "--- sample 1 of 3 ---",
        "--- sample 2 of 3 ---",
        "--- sample 3 of 3 ---",
    ]


@pytest.mark.parametrize(
    "args,message",
    [
        (["", "--max-new-tokens", "4"], "the prompt is empty: give the text (or chat messages) to answer"),
        (["  "], "the prompt is empty: give the text (or chat messages) to answer"),
        ([PROMPT, "--top-p", "0.9"], "top_p only applies when sampling (greedy decoding has one answer): "),
        ([PROMPT, "--num-samples", "2"], "num_samples only applies when sampling (greedy decoding has one answer): "),
        ([PROMPT, "--raw", "--system", "Be brief."], "a system prompt goes through the chat template: drop raw"),
    ],
)
def test_generate_mistakes_are_one_line(tiny_model_dir, generate_calls, capsys, args, message):
    status, out, err = flux(capsys, "generate", str(tiny_model_dir), *args)
    assert status == 1 and out == ""
    assert err.startswith(f"flux: error: {message}") and err.count("\n") == 1
    assert generate_calls == []


@pytest.mark.parametrize(
    "option,value",
    [("--top-p", "1.5"), ("--top-k", "0"), ("--repetition-penalty", "-1"), ("--num-samples", "0")],
)
def test_out_of_range_options_are_usage_errors(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(tmp_path), PROMPT, option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"flux: error: argument {option}: ") and err.count("\n") == 1


# ------------------------------------------------------------------ FluxTrainer.generate


@pytest.fixture
def trainer(tiny_model_dir, tmp_path):
    config = FluxConfig.from_dict(
        {"model_path": str(tiny_model_dir), "output_dir": str(tmp_path / "out"), "algorithm": {"name": "dpo"}}
    )
    return FluxTrainer(config, show_progress=False)


def test_the_python_api_takes_the_same_options(trainer, tokenizer, generate_calls, tiny_model_dir, capsys):
    text = trainer.generate(PROMPT, max_new_tokens=8)
    assert isinstance(text, str)
    assert generate_calls[0]["prompt"] == templated(tokenizer, [{"role": "user", "content": PROMPT}])
    assert flux(capsys, "generate", str(tiny_model_dir), PROMPT, "--max-new-tokens", "8")[1] == text + "\n"

    samples = trainer.generate(PROMPT, max_new_tokens=4, temperature=1.0, top_k=50, num_samples=4)
    assert isinstance(samples, list) and len(samples) == 4 and all(isinstance(s, str) for s in samples)
    assert generate_calls[2]["num_return_sequences"] == 4 and generate_calls[2]["top_k"] == 50

    trainer.generate(PROMPT, max_new_tokens=4, raw=True, system=None)
    assert generate_calls[3]["prompt"] == tokenizer(PROMPT).input_ids
    trainer.generate(PROMPT, max_new_tokens=4, system="Be brief.", repetition_penalty=1.1)
    system_first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    assert generate_calls[4]["prompt"] == templated(tokenizer, system_first)
    assert generate_calls[4]["repetition_penalty"] == 1.1
    # transformers' own options still pass through (the examples sample with do_sample=True)
    trainer.generate(PROMPT, max_new_tokens=4, do_sample=True)
    assert generate_calls[5]["do_sample"] is True


def test_python_api_mistakes_fail_before_the_model_loads(trainer):
    with pytest.raises(FluxError, match=r"^top_p only applies when sampling"):
        trainer.generate(PROMPT, top_p=0.9)
    with pytest.raises(FluxError, match=r"^num_samples must be a whole number >= 1, not 0$"):
        trainer.generate(PROMPT, num_samples=0, temperature=1.0)
    assert trainer.model is None
    with pytest.raises(FluxError, match=r"^the prompt is empty"):
        trainer.generate("")


# ------------------------------------------------------------------ flux chat


def chat(monkeypatch, capsys, model_dir, lines: str, *options) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    return flux(capsys, "chat", str(model_dir), "--max-new-tokens", "5", *options)


def test_chat_sends_the_whole_conversation_each_turn(tiny_model_dir, tokenizer, generate_calls, monkeypatch, capsys):
    status, out, _ = chat(monkeypatch, capsys, tiny_model_dir, "Hello there.\nAnd then?\n", "--system", "Be kind.")
    assert status == 0 and len(generate_calls) == 2
    first_reply = tokenizer.decode(generate_calls[0]["completions"][0], skip_special_tokens=True)
    conversation = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello there."},
        {"role": "assistant", "content": first_reply},
        {"role": "user", "content": "And then?"},
    ]
    assert generate_calls[0]["prompt"] == templated(tokenizer, conversation[:2])
    assert generate_calls[1]["prompt"] == templated(tokenizer, conversation)
    assert generate_calls[0]["streamer"] is not None  # printed as it is generated
    assert f"assistant> {first_reply}" in out


def test_chat_reset_forgets_and_exit_ends(tiny_model_dir, tokenizer, generate_calls, monkeypatch, capsys):
    status, out, _ = chat(monkeypatch, capsys, tiny_model_dir, "Hello there.\n/reset\nAgain.\n/exit\nNever sent.\n")
    assert status == 0 and len(generate_calls) == 2
    assert generate_calls[1]["prompt"] == templated(tokenizer, [{"role": "user", "content": "Again."}])
    assert "(conversation reset)" in out


def test_chat_needs_a_chat_template_and_generate_then_feeds_raw_text(
    tiny_model_dir, tokenizer, tmp_path, generate_calls, monkeypatch, capsys
):
    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink()
    status, _, err = chat(monkeypatch, capsys, plain, "Hello\n")
    assert status == 1
    assert err.startswith("flux: error: this tokenizer has no chat template") and err.count("\n") == 1
    assert generate_calls == []
    # a base model without a template: generate feeds the text as it is
    assert flux(capsys, "generate", str(plain), PROMPT, "--max-new-tokens", "3")[0] == 0
    assert generate_calls[0]["prompt"] == tokenizer(PROMPT).input_ids


def test_a_turn_that_cannot_be_answered_is_one_line_and_the_chat_goes_on(
    tiny_model_dir, tokenizer, generate_calls, monkeypatch, capsys
):
    too_long = "words " * 2100  # more tokens than the tiny model's 2048 positions
    status, _, err = chat(monkeypatch, capsys, tiny_model_dir, f"{too_long}\nHello there.\n")
    assert status == 0
    assert err.startswith("flux: error: the prompt (") and "do not fit the model's context of 2048 tokens" in err
    assert err.count("\n") == 1
    # the failed turn is not part of the conversation
    assert [call["prompt"] for call in generate_calls] == [
        templated(tokenizer, [{"role": "user", "content": "Hello there."}])
    ]
