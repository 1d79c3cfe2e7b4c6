"""Entry point of flux-kto: registers the ``kto`` algorithm and its ``unpaired`` data format.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins.
"""

from flux_core import Algorithm, DataFormat, PlotPanel, hookimpl
from flux_kto.config import KTOAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"

UNPAIRED = DataFormat(
    "unpaired",
    ("prompt", "completion"),
    "unpaired examples: prompt, completion (strings or chat message lists) and label (true: desirable, "
    "false: undesirable), or a messages conversation and label (its last assistant turn is the completion); "
    "preference pairs (prompt, chosen, rejected) are unpaired automatically",
    alternative_keys=("messages",),
    label_keys=("label",),
    from_preferences="flux_kto.data:unpair",
)


PLOT_PANELS = (
    PlotPanel("loss", ("loss", "eval_loss"), "KTO loss"),
    PlotPanel("reward margin", ("reward_margin",), "desirable − undesirable reward"),
    PlotPanel(
        "desirable vs undesirable reward", ("desirable_reward", "undesirable_reward"), "implicit reward β·log(π/π_ref)"
    ),
    PlotPanel("KL estimate", ("kl",), "KL to the reference (batch estimate)"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="kto",
            config_schema=KTOAlgorithmConfig,
            runner="flux_kto.runner:KTORunner",
            trl_relies_on="flux_kto.trl_reliance:TRL_RELIES_ON",
            data_format="unpaired",
            data_format_spec=UNPAIRED,
            trl_config="trl:KTOConfig",
            plot_panels=PLOT_PANELS,
            description="Kahneman-Tversky Optimization on examples labelled desirable or not (TRL KTOTrainer)",
        )
    )
