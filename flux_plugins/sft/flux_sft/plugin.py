"""Entry point of flux-sft: registers the ``sft`` algorithm and its ``sft`` data format.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins.
"""

from flux_core import Algorithm, DataFormat, PlotPanel, hookimpl
from flux_sft.config import SFTAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"

SFT_DATA = DataFormat(
    "sft",
    ("prompt", "completion"),
    "SFT examples: a messages conversation (chat message list), or prompt + completion (strings or chat "
    "message lists), or text; preference pairs train on prompt + chosen",
    alternative_keys=("messages", "text"),
    from_preferences="flux_sft.data:chosen_completions",
    normalize="flux_sft.data:check_examples",
)


PLOT_PANELS = (
    PlotPanel("loss", ("loss", "eval_loss"), "cross-entropy per token (nats)"),
    PlotPanel("token accuracy", ("mean_token_accuracy", "eval_mean_token_accuracy"), "share of next tokens predicted"),
    PlotPanel("entropy", ("entropy",), "entropy per token (nats)"),
    PlotPanel("gradient norm", ("grad_norm",), "L2 norm before clipping"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="sft",
            config_schema=SFTAlgorithmConfig,
            runner="flux_sft.runner:SFTRunner",
            trl_relies_on="flux_sft.trl_reliance:TRL_RELIES_ON",
            data_format="sft",
            data_format_spec=SFT_DATA,
            trl_config="trl:SFTConfig",
            evaluator="flux_sft.evaluate:evaluate_examples",
            preview="flux_sft.preview:preview_examples",
            plot_panels=PLOT_PANELS,
            description="Supervised fine-tuning on conversations, prompt + completion or text (TRL SFTTrainer)",
        )
    )
