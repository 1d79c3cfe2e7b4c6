"""Entry point of flux-distill: registers the ``distill`` algorithm.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux lists or loads plugins.
"""

from flux_core import Algorithm, PlotPanel, hookimpl
from flux_distill.config import DistillAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"

PLOT_PANELS = (
    PlotPanel("loss", ("loss", "eval_loss"), "divergence to the teacher per token"),
    PlotPanel("entropy", ("entropy",), "student entropy per token (nats)"),
    PlotPanel("completion length", ("completion_length",), "tokens"),
    PlotPanel("gradient norm", ("grad_norm",), "L2 norm before clipping"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="distill",
            config_schema=DistillAlgorithmConfig,
            runner="flux_distill.runner:DistillRunner",
            trl_relies_on="flux_distill.trl_reliance:TRL_RELIES_ON",
            data_format="prompts",
            trl_config="trl:DistillationConfig",
            plot_panels=PLOT_PANELS,
            description="On-policy distillation: the student matches a teacher model on its own samples "
            "(TRL DistillationTrainer)",
        )
    )
