"""Entry point of flux-sft: registers the ``sft`` algorithm and its ``sft`` data format.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins.
"""

from flux_core import Algorithm, DataFormat, hookimpl
from flux_sft.config import SFTAlgorithmConfig

SFT_DATA = DataFormat(
    "sft",
    ("prompt", "completion"),
    "SFT examples: a messages conversation (chat message list), or prompt + completion (strings or chat "
    "message lists), or text; preference pairs train on prompt + chosen",
    alternative_keys=("messages", "text"),
    from_preferences="flux_sft.data:chosen_completions",
    normalize="flux_sft.data:check_examples",
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="sft",
            config_schema=SFTAlgorithmConfig,
            runner="flux_sft.runner:SFTRunner",
            data_format="sft",
            data_format_spec=SFT_DATA,
            trl_config="trl:SFTConfig",
            evaluator="flux_sft.evaluate:evaluate_examples",
            description="Supervised fine-tuning on conversations, prompt + completion or text (TRL SFTTrainer)",
        )
    )
