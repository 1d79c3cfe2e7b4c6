"""The rollout interface: LocalBackend, sampling settings, and GRPO through a pluggable backend."""

import pytest
from datasets import Dataset
from make_prompts import make_prompts

from flux_core.config import FluxConfig
from flux_core.errors import FluxError
from flux_core.online.rollout import LocalBackend, RolloutBackend, SamplingParams


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from flux_core.modeling import load_model, load_tokenizer

    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


def test_local_backend_returns_n_completions_per_prompt_grouped_by_prompt(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    backend = LocalBackend(model, tokenizer)
    assert isinstance(backend, RolloutBackend)
    prompts = ["Explain jazz.", [{"role": "user", "content": "Explain coffee."}]]
    rollouts = backend.generate(prompts, n=3, sampling=SamplingParams(max_new_tokens=6))

    assert [r.prompt_index for r in rollouts] == [0, 0, 0, 1, 1, 1]
    assert rollouts[0].prompt_ids == tokenizer("Explain jazz.").input_ids
    chat_text = tokenizer.decode(rollouts[3].prompt_ids)
    assert chat_text.startswith("<|im_start|>user\nExplain coffee.") and chat_text.endswith("<|im_start|>assistant\n")
    for rollout in rollouts:
        assert 1 <= len(rollout.completion_ids) <= 6
        ended = rollout.completion_ids[-1] in backend.eos_token_ids
        assert rollout.truncated == (not ended)
        if rollout.truncated:
            assert len(rollout.completion_ids) == 6
        assert rollout.text == tokenizer.decode(rollout.completion_ids, skip_special_tokens=True)
        assert rollout.logprobs is None
    assert len({tuple(r.completion_ids) for r in rollouts[:3]}) > 1  # sampling gives different completions


def test_temperature_zero_is_greedy_and_the_training_mode_is_restored(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    model.train()
    backend = LocalBackend(model, tokenizer, max_batch_size=2)
    greedy = SamplingParams(max_new_tokens=5, temperature=0)
    first = backend.generate(["Describe volcanoes."], n=3, sampling=greedy)
    again = backend.generate(["Describe volcanoes."], n=1, sampling=greedy)
    assert len({tuple(r.completion_ids) for r in first + again}) == 1
    assert model.training


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"temperature": -1}, "temperature must be >= 0 (0 = greedy)"),
        ({"top_p": 0}, "top_p must be in (0, 1]"),
        ({"top_k": -2}, "top_k must be >= 0"),
    ],
)
def test_bad_sampling_settings_are_explained(settings, message):
    with pytest.raises(FluxError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        SamplingParams(**settings)


def test_grpo_generates_through_any_backend_given_to_the_runner(tiny_model_dir, tmp_path):
    """The seam a server backend uses: GRPO trains on whatever the backend returns."""
    from flux_grpo.runner import GRPORunner

    calls, syncs = [], []

    class RecordingBackend(LocalBackend):
        is_local = False  # behaves like a server: TRL must not generate by itself

        def generate(self, prompts, n, sampling):
            calls.append((list(prompts), n, sampling))
            return super().generate(prompts, n, sampling)

        def sync_weights(self, model):
            syncs.append(model)
            super().sync_weights(model)

    config = FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "out"),
            "num_steps": 2,
            "batch_size": 8,
            "algorithm": {
                "name": "grpo",
                "num_generations": 4,
                "max_completion_length": 6,
                "temperature": 0.9,
                "rewards": [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}],
            },
        }
    )
    factory = lambda config, model, tokenizer: RecordingBackend(model, tokenizer)  # noqa: E731
    runner = GRPORunner(config, show_progress=False, rollout_backend=factory)
    result = runner.fit(Dataset.from_list(make_prompts(16, seed=0)), None, [])

    assert result.steps == 2 and len(calls) == 2
    prompts, n, sampling = calls[0]
    assert n == 1 and len(prompts) == 8  # TRL hands over each prompt once per generation
    assert prompts[0] == prompts[3] and prompts[4] == prompts[7] and prompts[0] != prompts[4]
    assert sampling == SamplingParams(max_new_tokens=6, temperature=0.9, top_p=1.0)
    assert len(syncs) >= 2  # at build time and before the first generation of each step
    assert all("reward" in step.metrics and "completion_length" in step.metrics for step in result.history)
    assert all(step.metrics["completion_length"] <= 6 for step in result.history)


@pytest.mark.parametrize("chat", [False, True])
def test_local_backend_through_the_seam_reproduces_trl_generation_exactly(tiny_model_dir, tmp_path, chat):
    """Same seed, same samples: the backend tokenizes, samples and cuts completions as TRL does."""
    from flux_grpo.runner import GRPORunner

    config = FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "out"),
            "num_steps": 3,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "algorithm": {
                "name": "grpo",
                "num_generations": 4,
                "max_completion_length": 8,
                "rewards": [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}],
            },
        }
    )
    records = Dataset.from_list(make_prompts(16, seed=0, chat=chat))
    by_trl = GRPORunner(config, show_progress=False).fit(records, None, [])
    through_backend = GRPORunner(
        config, show_progress=False, rollout_backend=lambda config, model, tokenizer: LocalBackend(model, tokenizer)
    ).fit(records, None, [])
    for metric in ("reward", "completion_length", "loss"):
        assert through_backend.metric(metric) == by_trl.metric(metric), metric


def vllm_config(tiny_model_dir, tmp_path, **extra):
    return FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "out"),
            "batch_size": 4,
            "algorithm": {
                "name": "grpo",
                "num_generations": 4,
                "rewards": [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}],
            },
            "trl": {
                "use_vllm": True,
                "vllm_mode": "server",
                "vllm_server_base_url": "http://10.0.0.5:8000",
                "vllm_importance_sampling_mode": "token_truncate",
            },
            **extra,
        }
    )


def test_trls_vllm_server_mode_settings_reach_grpo_config(tiny_model_dir, tmp_path, model_and_tokenizer):
    """docs/rollouts.md: GRPO with TRL's own vLLM server is configured in the trl: block (no vLLM installed here)."""
    from flux_grpo.runner import build_grpo_args

    from flux_core.online.rewards import build_reward_functions

    config = vllm_config(tiny_model_dir, tmp_path)
    args = build_grpo_args(config, "fp32", build_reward_functions(config.algorithm.rewards), model_and_tokenizer[0])
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (True, "server", "http://10.0.0.5:8000")
    assert args.vllm_importance_sampling_mode == "token_truncate" and args.vllm_importance_sampling_correction


def test_sglang_and_trls_vllm_together_are_refused(tiny_model_dir, tmp_path):
    from flux_grpo.runner import GRPORunner

    config = vllm_config(tiny_model_dir, tmp_path, sglang={"base_url": "http://127.0.0.1:30000"})
    with pytest.raises(FluxError, match="sglang.base_url and trl.use_vllm both pick a rollout server; keep one"):
        GRPORunner(config, show_progress=False)
