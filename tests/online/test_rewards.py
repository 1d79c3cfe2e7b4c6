"""Rewards: every built-in, reward specs, and the errors a misbehaving reward produces."""

import math

import pytest

from flux_core import hookimpl
from flux_core.errors import FluxError
from flux_core.online.builtin_rewards import (
    exact_match,
    format_check,
    length_target,
    pattern_fraction,
    regex_match,
)
from flux_core.online.rewards import RewardSpec, build_reward_functions, score_completions

CHAT = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731  a chat-format completion


# ------------------------------------------------------------------ built-in rewards


def test_exact_match_compares_with_the_column_ignoring_case_and_spacing_by_default():
    completions = ["  Paris ", "paris", "Lyon", CHAT("PARIS")]
    answers = ["Paris"] * 4
    assert exact_match([""] * 4, completions, answer=answers) == [1.0, 1.0, 0.0, 1.0]
    assert exact_match([""] * 4, completions, answer=answers, normalize=False) == [0.0, 0.0, 0.0, 0.0]
    assert exact_match([""], ["4"], column="solution", solution=[4]) == [1.0]  # non-string columns compare as text


def test_regex_match_extracts_the_last_match_and_compares_it_with_the_column():
    completions = ["2+2 is #### 4", "first #### 3 then #### 5", "no marker, 4", "#### 4.0"]
    scores = regex_match([""] * 4, completions, pattern=r"#### (\S+)", answer=["4", "5", "4", "4"])
    assert scores == [1.0, 1.0, 0.0, 0.0]
    # without a capture group the whole match is the answer
    assert regex_match([""], ["the answer: 42"], pattern=r"\d+", answer=["42"]) == [1.0]


def test_format_check_searches_or_matches_the_whole_completion():
    pattern = r"<answer>.*</answer>"
    completions = ["<answer>4</answer>", "so <answer>\n4</answer> done", "4"]
    assert format_check([""] * 3, completions, pattern=pattern) == [1.0, 1.0, 0.0]
    assert format_check([""] * 3, completions, pattern=pattern, full_match=True) == [1.0, 0.0, 0.0]


def test_length_target_is_one_at_the_target_and_falls_linearly_to_zero():
    completions = ["x" * 10, "x" * 5, "x" * 15, "x" * 30, ""]
    assert length_target([""] * 5, completions, target=10) == [1.0, 0.5, 0.5, 0.0, 0.0]
    assert length_target([""] * 2, ["one two three", "one"], target=3, unit="words") == pytest.approx([1.0, 1 / 3])


def test_pattern_fraction_is_the_share_of_characters_matched():
    assert pattern_fraction([""] * 4, ["eeee", "tree", "xyz", ""], pattern="e") == [1.0, 0.5, 0.0, 0.0]
    assert pattern_fraction([""], ["héllo"], pattern=r"[\x00-\x7f]") == [0.8]  # an ASCII-consistency reward


def test_reward_model_scores_prompt_plus_completion_with_the_classifier(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    classifier.save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "rm")

    (reward,) = build_reward_functions([{"model": str(tmp_path / "rm")}])
    assert reward.name == "reward_model"
    prompts, completions = ["Explain jazz.", "Explain jazz."], [" Jazz is music.", " idk"]
    scores = reward(prompts, completions)

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "rm")
    with torch.no_grad():
        expected = [
            classifier(**tokenizer(p + c, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
            for p, c in zip(prompts, completions)
        ]
    assert scores == pytest.approx(expected, abs=1e-4)  # padding in the batch does not change a score
    assert scores[0] != pytest.approx(scores[1])


# ------------------------------------------------------------------ specs


def test_model_shorthand_is_the_reward_model_reward(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    spec = RewardSpec(model=str(tmp_path), weight=2.0)
    assert (spec.name, spec.kwargs, spec.weight) == ("reward_model", {"path": str(tmp_path)}, 2.0)
    assert RewardSpec.model_validate(spec.model_dump()) == spec  # a saved flux_config.yaml loads again
    with pytest.raises(ValueError, match="give either name: exact_match or model:"):
        RewardSpec(name="exact_match", model=str(tmp_path))


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "exact_macth"}, "unknown reward 'exact_macth' (did you mean 'exact_match'?)"),
        ({"name": "format_check"}, "reward 'format_check' needs kwargs: {pattern: ...}"),
        ({"name": "format_check", "kwargs": {"patern": "x"}}, "has no setting 'patern' (did you mean 'pattern'?)"),
        ({"name": "format_check", "kwargs": {"pattern": "("}}, "reward 'format_check': invalid regular expression '('"),
        ({"name": "length_target", "kwargs": {"target": 0}}, "target must be a positive integer, not 0"),
        ({"model": "/no/such/model"}, "reward model '/no/such/model': no model directory there"),
        ({"weight": 1.0}, "each reward needs a name (a registered reward) or model"),
    ],
)
def test_bad_reward_specs_are_explained(spec, message):
    with pytest.raises(ValueError) as error:
        RewardSpec.model_validate(spec)
    assert message in str(error.value)


def test_a_reward_listed_twice_needs_labels():
    twice = [{"name": "format_check", "kwargs": {"pattern": "a"}}, {"name": "format_check", "kwargs": {"pattern": "b"}}]
    with pytest.raises(FluxError, match="reward 'format_check' is listed twice; give each a distinct label"):
        build_reward_functions(twice)
    twice[1]["label"] = "has_b"
    assert [fn.name for fn in build_reward_functions(twice)] == ["format_check", "has_b"]


# ------------------------------------------------------------------ misbehaving rewards


@pytest.fixture
def custom_reward(register_plugin):
    """Register ``fn`` as reward ``name`` for one test; returns its configured callable."""

    def register(name, fn, **spec):
        class Plugin:
            @hookimpl
            def register_rewards(self, register):
                register(name, fn)

        register_plugin(Plugin(), name=f"test-{name}")
        return build_reward_functions([{"name": name, **spec}])[0]

    return register


def test_a_reward_that_raises_is_named_with_the_offending_completion(custom_reward):
    def picky(prompts, completions, **columns):
        return [1.0 / len(c) for c in completions]  # an empty completion divides by zero

    reward = custom_reward("picky", picky)
    with pytest.raises(FluxError) as error:
        reward(["Say hi.", "Say bye.", "Say yes."], ["hi", "", "yes"])
    assert (
        str(error.value)
        == "reward 'picky' raised ZeroDivisionError on completion 1 (prompt 'Say bye.'): float division by zero"
    )
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "values, message",
    [
        ([1.0], "reward 'bad' returned 1 values for 2 completions; return exactly one per completion"),
        (
            [1.0, "high"],
            "reward 'bad' returned str 'high' for completion 1 (prompt 'b'); rewards must be numbers or None",
        ),
        ([math.nan, 1.0], "reward 'bad' returned nan for completion 0 (prompt 'a'); rewards must be finite"),
        ([1.0, math.inf], "reward 'bad' returned inf for completion 1 (prompt 'b'); rewards must be finite"),
        (3.0, "reward 'bad' returned float, not a list with one number per completion"),
    ],
)
def test_bad_reward_values_are_one_line_errors_naming_the_reward(custom_reward, values, message):
    reward = custom_reward("bad", lambda prompts, completions, **columns: values)
    with pytest.raises(FluxError) as error:
        reward(["a", "b"], ["x", "y"])
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_none_means_not_applicable_and_is_left_out_of_the_total(custom_reward):
    only_short = custom_reward(
        "only_short", lambda prompts, completions, **c: [1.0 if len(x) < 3 else None for x in completions]
    )
    length = custom_reward("length", lambda prompts, completions, **c: [float(len(x)) for x in completions], weight=0.5)
    scores = score_completions([only_short, length], ["p", "p", "p"], ["ab", "abcd", "abcdef"])
    assert scores.by_name == {"only_short": [1.0, None, None], "length": [2.0, 4.0, 6.0]}
    assert scores.total == [2.0, 2.0, 3.0]
    metrics = scores.metrics()
    assert metrics["reward"] == pytest.approx(7 / 3)
    assert metrics["reward_only_short"] == 1.0 and metrics["reward_length"] == 4.0
    assert metrics["reward_std"] == pytest.approx(math.sqrt(((2 - 7 / 3) ** 2 * 2 + (3 - 7 / 3) ** 2) / 2))

    # ...but a reward that applies to nothing in a whole batch is broken, not "not applicable"
    never = custom_reward("never", lambda prompts, completions, **c: [None] * len(completions))
    with pytest.raises(FluxError, match="reward 'never' returned None for all 2 completions of a batch"):
        score_completions([never], ["p", "p"], ["x", "y"])


def test_columns_and_settings_reach_the_reward_but_trainer_internals_do_not(custom_reward):
    seen = {}

    def spy(prompts, completions, *, scale=1.0, **columns):
        seen.update(columns, scale=scale)
        return [scale] * len(completions)

    # TRL's GRPOTrainer and RLOOTrainer add their internals to the columns; Flux's adapter drops them
    from flux_core import TRLReward

    reward = TRLReward(custom_reward("spy", spy, kwargs={"scale": 2.0}))
    values = reward(["p"], ["c"], answer=["42"], completion_ids=[[1]], trainer_state=object(), log_metric=print)
    assert values == [2.0]
    assert seen == {"answer": ["42"], "scale": 2.0}
    assert reward.__name__ == "spy"  # the name TRL logs it under


def test_a_column_named_like_a_setting_is_an_error(custom_reward):
    reward = custom_reward("spy2", lambda prompts, completions, *, scale=1.0, **c: [scale], kwargs={"scale": 2.0})
    with pytest.raises(FluxError, match="reward 'spy2': setting 'scale' has the same name as a dataset column"):
        reward(["p"], ["c"], scale=["3"])


def test_a_missing_column_names_the_reward_and_the_columns_there_are():
    (reward,) = build_reward_functions([{"name": "exact_match", "kwargs": {"column": "solution"}}])
    with pytest.raises(FluxError) as error:
        reward(["p"], ["c"], answer=["c"])
    assert str(error.value).startswith(
        "reward 'exact_match' reads column 'solution', which the data does not have (columns: answer)"
    )


def test_a_reward_model_scores_plain_text_with_eos_as_reward_trainer_trained_it(tiny_model_dir):
    # TRL's RewardTrainer (flux-rm) appends EOS to plain-text pairs; the score is read at the last
    # token, so the reward must score the same form. Chat data ends as its template says.
    from transformers import AutoTokenizer

    from flux_core.online.builtin_rewards import _reward_model_text

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tokenizer.eos_token
    assert _reward_model_text(tokenizer, "Q: hi\nA:", " hello") == "Q: hi\nA: hello" + eos
    assert _reward_model_text(tokenizer, "Q: hi\nA:", " hello" + eos) == "Q: hi\nA: hello" + eos  # not twice
