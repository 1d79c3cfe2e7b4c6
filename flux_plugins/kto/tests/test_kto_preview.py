"""`flux data` for KTO: each unpaired example is prompt + completion, the completion trained, with the ids
raw trl.KTOTrainer prepares, and the rows whose prompt fills max_length dropped as it drops them."""

import pytest

from flux_core.data.load import load_data
from flux_core.data.preview import preview_data
from flux_core.registry import get_registry


@pytest.mark.filterwarnings("ignore:.*column 'index' is not used")
def test_unpaired_examples_match_kto_trainer(dpo_config, preference_records):
    from flux_kto.runner import KTORunner
    from transformers import AutoTokenizer

    records = [dict(pair, index=i) for i, pair in enumerate(preference_records[:8])]
    config = dpo_config({"name": "kto", "beta": 0.1}, max_length=12, precision="fp32", batch_size=2)
    unpaired = load_data(records, "unpaired")  # each pair: a desirable and an undesirable example
    tokenizer = AutoTokenizer.from_pretrained(config.model_path)

    view = get_registry().get_algorithm("kto").load_preview()(config, tokenizer, unpaired)
    preview = preview_data(config, records, num_examples=len(unpaired))
    trained_rows = KTORunner(config, show_progress=False).build_trainer(unpaired, None).train_dataset

    kept = {(row["index"], row["label"]): row for row in trained_rows}
    shown = {(example.fields["index"], example.fields["label"]): example for example in preview.examples}
    assert 0 < len(kept) < len(shown) == len(unpaired)
    assert {key for key, example in shown.items() if not example.dropped} == set(kept)
    for position, row in enumerate(unpaired):
        trained = kept.get((row["index"], row["label"]))
        if trained is not None:
            ids = trained["prompt_ids"] + trained["completion_ids"]
            assert view.dataset[position]["text_input_ids"] == ids
            marks = [0] * len(trained["prompt_ids"]) + [1] * len(trained["completion_ids"])
            assert view.dataset[position]["text_trained"] == marks
