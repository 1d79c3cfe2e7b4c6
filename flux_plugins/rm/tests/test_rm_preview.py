"""`flux data` for reward models: pairs are shown whole (RewardTrainer does not truncate), and the pairs it
says are dropped for being longer than max_length are those RewardTrainer drops."""

import pytest

from flux_core.config import FluxConfig
from flux_core.data.preview import preview_data


@pytest.mark.filterwarnings("ignore:.*column 'index' is not used", "ignore:.*pairs are longer than max_length")
def test_pairs_longer_than_max_length_are_dropped_as_reward_trainer_drops_them(tiny_model_dir, preference_records):
    from flux_rm.runner import RewardModelRunner

    from flux_core.data.load import load_data

    records = [dict(pair, index=i) for i, pair in enumerate(preference_records[:16])]
    config = FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "max_length": 50,
            "precision": "fp32",
            "algorithm": {"name": "reward_model"},
        }
    )

    preview = preview_data(config, records, num_examples=len(records))
    trainer = RewardModelRunner(config, show_progress=False).build_trainer(load_data(records, "preferences"), None)
    kept = {row["index"] for row in trainer.train_dataset}

    assert 0 < len(kept) < len(records)
    assert {example.row for example in preview.examples if not example.dropped} == kept
    assert preview.summary.dropped == {"longer than max_length 50 (dropped, not truncated)": len(records) - len(kept)}
    assert preview.summary.longer == len(records) - len(kept)
    for example in preview.examples:
        assert all(sequence.cut_tokens == 0 for sequence in example.sequences)  # dropped whole, never cut
        chosen = example.sequences[0]
        assert chosen.name == "chosen" and chosen.trained == [example.fields["chosen"] + "<|endoftext|>"]
    assert "reward model scores the whole of each sequence" in preview.note
