"""Entry point of flux-rm: registers the ``reward_model`` algorithm.

It trains on core's ``preferences`` format, so every shape DPO accepts (explicit or
implicit prompt, strings or chat, hh-rlhf, trl-lib, H4) is normalised and checked by
core exactly as for DPO. Importing this module must stay cheap (no torch, no TRL).
"""

from flux_core import Algorithm, PlotPanel, hookimpl
from flux_rm.config import RewardModelAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"


PLOT_PANELS = (
    PlotPanel("loss", ("loss", "eval_loss"), "−log σ(r(chosen) − r(rejected))"),
    PlotPanel("accuracy", ("accuracy", "eval_accuracy"), "share of pairs scored higher for chosen"),
    PlotPanel("reward margin", ("reward_margin", "eval_reward_margin"), "r(chosen) − r(rejected)"),
    PlotPanel("rewards", ("mean_reward", "min_reward", "max_reward"), "score of a sequence"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="reward_model",
            config_schema=RewardModelAlgorithmConfig,
            runner="flux_rm.runner:RewardModelRunner",
            trl_relies_on="flux_rm.trl_reliance:TRL_RELIES_ON",
            data_format="preferences",
            trl_config="trl:RewardConfig",
            evaluator="flux_rm.evaluate:evaluate_pairs",
            preview="flux_rm.preview:preview_pairs",
            plot_panels=PLOT_PANELS,
            description="Reward model (a one-score sequence classifier) trained on preference pairs "
            "(TRL RewardTrainer); GRPO/PPO use it as rewards: [{model: DIR}]",
        )
    )
