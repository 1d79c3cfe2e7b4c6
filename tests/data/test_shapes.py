"""Practitioners' data shapes, read without any mapping: ShareGPT, Alpaca, LLaMA-Factory's pairs, content parts and
tool calls; role and message-key mapping; rows two layouts read differently; the one warning about unused columns.

Core formats here (``preferences``, ``prompts``); SFT, KTO and DPO train on these shapes in their plugins' tests.
"""

import json
import warnings

import pytest
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
    write_jsonl,
)

from flux import DataError
from flux_core.data.load import load_data, load_training_data


def error_of(source, data_format="preferences", **options) -> str:
    with pytest.raises(DataError) as info:
        load_data(source, data_format, **options)
    assert "\n" not in str(info.value)
    return str(info.value)


def load_quietly(source, data_format, **options):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        dataset = load_data(source, data_format, **options)
    return dataset, [str(warning.message) for warning in seen]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------------- ShareGPT


def test_sharegpt_pairs_from_llama_factory_become_chat_pairs(tmp_path):
    path = write_jsonl(tmp_path / "dpo_en.jsonl", sharegpt_pairs(3))
    loaded, seen = load_quietly(path, "preferences")
    assert seen == []
    assert sorted(loaded.column_names) == ["chosen", "prompt", "rejected"]
    row = loaded[1]
    assert row["prompt"] == [user(question(1)), assistant("Which part?"), user("The simple part.")]
    assert row["chosen"] == [assistant(answer(1))]
    assert row["rejected"] == [assistant(answer(1, good=False))]


def test_sharegpt_conversations_give_prompts_before_the_last_reply_with_roles_mapped(tmp_path):
    path = write_jsonl(tmp_path / "sharegpt.jsonl", sharegpt_rows(2))
    loaded, seen = load_quietly(path, "prompts")
    assert seen == []  # prompts hand every column to reward functions: nothing is unused
    system = {"role": "system", "content": "Be helpful and polite."}
    assert loaded[0]["prompt"] == [
        system,
        user(question(0)),
        assistant(answer(0)),
        user("Thank you, and a short example?"),
    ]
    assert loaded[0]["messages"][-1] == assistant("Example 0: the model is clear.")
    assert loaded["id"] == ["identity_0", "identity_1"]  # reaches reward functions
    assert load_data(path, "prompts", num_proc=2).to_list() == loaded.to_list()


def test_tool_calls_become_the_chat_templates_form_and_tools_stay_json(tmp_path):
    path = write_jsonl(tmp_path / "glaive.jsonl", sharegpt_tool_rows(2))
    loaded = load_data(path, "prompts")
    messages = loaded[1]["messages"]
    assert messages[1] == {
        "role": "assistant",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "c1"}}}],
    }  # exactly these keys: no content: None, no tool_calls: None on the other turns
    assert messages[0] == user("What is the weather in city 1?")
    assert messages[2] == {"role": "tool", "content": '{"weather": "sunny"}'}
    assert loaded[1]["prompt"] == messages[:3]
    assert json.loads(loaded[1]["tools"]) == [WEATHER_TOOL]


def test_openai_tool_calls_keep_their_form_with_the_arguments_parsed():
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    rows = [
        {
            "messages": [
                user("Weather in Oslo?"),
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
                assistant("It rains."),
            ]
        }
    ]
    messages = load_data(rows, "prompts")[0]["messages"]
    assert messages[1] == {
        "role": "assistant",
        "tool_calls": [call | {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "rain"}
    assert messages[3] == assistant("It rains.")


def test_a_tools_list_becomes_a_json_string_and_an_empty_one_no_tools():
    rows = sharegpt_tool_rows(2)
    rows[0]["tools"] = [WEATHER_TOOL]
    rows[1]["tools"] = [{"name": "other", "parameters": {"type": "object", "properties": {}}}]
    loaded = load_data(rows, "prompts")
    assert json.loads(loaded[0]["tools"]) == [WEATHER_TOOL]  # not padded with the other schema's keys as None
    assert json.loads(loaded[1]["tools"]) == [rows[1]["tools"][0]]
    rows = sharegpt_tool_rows(1)
    rows[0]["tools"] = ""
    assert load_data(rows, "prompts")[0]["tools"] is None


def test_bad_tool_calls_and_tool_schemas_are_one_line_errors():
    rows = sharegpt_tool_rows(2)
    rows[1]["conversations"][1]["value"] = "get_weather(city=Paris)"
    assert error_of(rows, "prompts") == (
        "data list item 2: 'conversations'[1] is a tool call whose value is not JSON like "
        '{"name": "...", "arguments": {...}}'
    )
    rows = sharegpt_tool_rows(1)
    rows[0]["tools"] = "[{broken"
    assert error_of(rows, "prompts").startswith("data list item 1: 'tools' is not valid JSON")


# ---------------------------------------------------------------------- Alpaca


def test_alpaca_gives_prompts_with_the_input_as_its_own_paragraph_and_keeps_output_for_rewards(tmp_path):
    path = write_jsonl(tmp_path / "alpaca.jsonl", alpaca_rows(2))
    loaded, seen = load_quietly(path, "prompts")
    assert seen == []
    assert loaded[0]["prompt"] == f"{question(0)}\n\nContext 0: short and clear."
    assert loaded[1]["prompt"] == question(1)  # an empty input adds nothing
    assert loaded["output"] == [answer(0), answer(1)]  # the reference answer reaches reward functions
    assert "instruction" not in loaded.column_names


def test_alpaca_with_system_and_history_becomes_a_conversation():
    loaded = load_data(alpaca_rows(2, system=True, history=True), "prompts")
    assert loaded[0]["prompt"] == [
        {"role": "system", "content": "Be helpful and polite."},
        user("Hello, can you help?"),
        assistant("Yes, I can help."),
        user(f"{question(0)}\n\nContext 0: short and clear."),
    ]


def test_alpaca_pairs_keep_the_input():
    loaded, seen = load_quietly(alpaca_pairs(2), "preferences")
    assert seen == []
    assert loaded[1] == {
        "prompt": f"{question(1)}\n\nContext 1: short and clear.",
        "chosen": answer(1),
        "rejected": answer(1, good=False),
    }
    chat = [row | {"system": "Be brief."} for row in alpaca_pairs(1)]
    row = load_data(chat, "preferences")[0]
    assert row["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert row["chosen"] == [assistant(answer(0))]


def test_bad_alpaca_rows_are_named():
    rows = alpaca_pairs(2)
    del rows[1]["rejected"]
    assert error_of(rows, "preferences") == (
        "data list item 2: missing key 'rejected' (each example needs Alpaca's instruction, chosen and rejected)"
    )
    rows = alpaca_rows(2, history=True)
    rows[1]["history"] = [["only a question"]]
    assert error_of(rows, "prompts") == (
        "data list item 2: 'history'[0] must be a pair [instruction, answer] of strings"
    )


# ---------------------------------------------------------------------- messages as written


def test_content_parts_are_joined_and_other_parts_refused():
    rows = [
        {
            "prompt": [{"role": "user", "content": [{"type": "text", "text": "Sky"}, {"type": "text", "text": "?"}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Blue."}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "Green."}]}],
        }
    ]
    assert load_data(rows, "preferences")[0] == {
        "prompt": [user("Sky?")],
        "chosen": [assistant("Blue.")],
        "rejected": [assistant("Green.")],
    }
    assert load_data(content_part_rows(1), "prompts")[0]["prompt"] == [user(f"{question(0)} Now.")]
    rows = content_part_rows(2)
    rows[1]["messages"][0]["content"].append({"type": "image", "image": "sky.png"})
    assert error_of(rows, "prompts") == (
        "data list item 2: 'messages'[0] content part 2 is 'image', not text; Flux trains text models: "
        'keep only parts like {"type": "text", "text": "..."}'
    )


def test_role_names_map_and_an_unknown_one_names_the_mapping_key(tmp_path):
    rows = [{"messages": [{"role": "human", "content": "Hi"}, {"role": "bot", "content": "Hello"}], "answer": "a"}]
    assert load_data(rows, "prompts")[0]["messages"] == [user("Hi"), assistant("Hello")]
    mixed_keys = [{"messages": [{"role": "user", "content": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    assert load_data(mixed_keys, "prompts")[0]["messages"] == [user("Hi"), assistant("Hello")]
    known = {"messages": [{"role": "human", "content": "Hi"}, {"role": "gpt", "content": "Hello"}]}
    unknown = {"messages": [{"role": "customer", "content": "Hi"}, {"role": "agent", "content": "Hello"}]}
    path = write_jsonl(tmp_path / "support.jsonl", [known, known, unknown])
    assert error_of(path, "prompts") == (
        f"{path}:3: 'messages'[0] has role 'customer', which Flux does not know; map it onto one of system, user, "
        "assistant, tool_call, tool with data.roles (e.g. roles: {user: [customer]})"
    )
    mapped = load_data(path, "prompts", roles={"user": ["customer"], "assistant": ["agent"]})
    assert mapped["prompt"] == [[user("Hi")]] * 3


def test_message_keys_read_any_message_layout_from_the_yaml_long_form(tmp_path, dpo_config):
    rows = [
        {
            "question": [{"speaker": "customer", "text": f"Hi {index}"}],
            "good": [{"speaker": "agent", "text": "Hello"}],
            "bad": [{"speaker": "agent", "text": "Go away"}],
        }
        for index in range(4)
    ]
    path = write_jsonl(tmp_path / "support.jsonl", rows)
    source = {
        "path": path,
        "columns": {"prompt": "question", "chosen": "good", "rejected": "bad"},
        "message_keys": {"role": "speaker", "content": "text"},
        "roles": {"user": ["customer"], "assistant": ["agent"]},
    }
    train, _ = load_training_data(dpo_config(data=source, batch_size=2), "preferences")
    assert train[3] == {"prompt": [user("Hi 3")], "chosen": [assistant("Hello")], "rejected": [assistant("Go away")]}
    assert error_of(path, columns=source["columns"], message_keys={"role": "who"}) == (
        "data.message_keys.role: the messages in 'prompt' have no key 'who' (keys: speaker, text)"
    )


# ---------------------------------------------------------------------- two readings of one row


def test_a_row_two_layouts_read_differently_is_named_with_both_readings(tmp_path):
    conversation = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    both = write_jsonl(tmp_path / "both.jsonl", [conversation, conversation | {"messages": [user("Hi")]}])
    assert error_of(both, "prompts") == (
        f"{both}:2: 'conversations' (a ShareGPT conversation) and 'messages' (a chat conversation) are two readings "
        "of this example; keep one of the two columns (or map one away with data.columns)"
    )
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [conversation, {"messages": [user("Hi")]}])
    assert error_of(mixed, "prompts") == (
        f"{mixed}:2: 'messages' (a chat conversation) here but 'conversations' (a ShareGPT conversation) in other "
        "rows; use one layout per file"
    )
    alpaca_and_prompt = [{"instruction": "a", "input": "", "output": "b", "prompt": "c"}]
    assert error_of(alpaca_and_prompt, "prompts") == (
        "data list item 1: 'instruction' (an Alpaca instruction) and 'prompt' (a prompt) are two readings of this "
        "example; keep one of the two columns (or map one away with data.columns)"
    )


# ---------------------------------------------------------------------- columns training never reads


def test_columns_training_never_reads_are_named_in_one_warning(tmp_path):
    rows = [pair | {"source": "web", "score": 1.0} for pair in alpaca_pairs(2)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    _, seen = load_quietly(path, "preferences")
    from flux_core.registry import get_registry

    trained_by = " or ".join(sorted(n for n, a in get_registry().algorithms.items() if a.data_format == "preferences"))
    assert "dpo or" in trained_by  # every installed algorithm that trains on pairs: dpo, reward_model, ...
    assert seen == [
        f"{path}: columns 'source', 'score' are not used by {trained_by} (shape: alpaca); training ignores "
        "them (map a column that holds training text with data.columns)"
    ]
    tools = [pair | {"tools": json.dumps([WEATHER_TOOL])} for pair in alpaca_pairs(2)]
    assert load_quietly(tools, "preferences")[1] == []  # TRL hands tools to the chat template
