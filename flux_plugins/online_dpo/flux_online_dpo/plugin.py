"""Entry point of flux-online-dpo: registers the ``online_dpo`` algorithm.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux lists or loads plugins.
Rewards come from ``register_rewards`` (built-ins live in ``flux_core.online.builtin_rewards``), shared
with GRPO and PPO.
"""

from flux_core import Algorithm, PlotPanel, hookimpl
from flux_online_dpo.config import OnlineDPOAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"

PLOT_PANELS = (
    PlotPanel("reward", ("reward",), "mean reward of a completion"),
    PlotPanel("loss", ("loss",), "DPO loss on the sampled pairs"),
    PlotPanel("reward margin", ("reward_margin",), "chosen − rejected implicit reward"),
    PlotPanel("KL to the reference", ("kl",), "KL per completion (nats)"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="online_dpo",
            config_schema=OnlineDPOAlgorithmConfig,
            runner="flux_online_dpo.runner:OnlineDPORunner",
            trl_relies_on="flux_online_dpo.trl_reliance:TRL_RELIES_ON",
            data_format="prompts",
            # through the plugin's one guarded import of trl.experimental (trl_experimental.py)
            trl_config="flux_online_dpo.trl_experimental:OnlineDPOConfig",
            plot_panels=PLOT_PANELS,
            description="Online DPO: two samples per prompt ranked by rewards, trained with the DPO loss "
            "(TRL OnlineDPOTrainer)",
        )
    )
