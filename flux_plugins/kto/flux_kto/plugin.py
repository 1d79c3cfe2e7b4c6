"""Entry point of flux-kto: registers the ``kto`` algorithm and its ``unpaired`` data format.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins.
"""

from flux_core import Algorithm, DataFormat, hookimpl
from flux_kto.config import KTOAlgorithmConfig

UNPAIRED = DataFormat(
    "unpaired",
    ("prompt", "completion"),
    "unpaired examples: prompt, completion (strings or chat message lists) and label (true: desirable, "
    "false: undesirable); preference pairs (prompt, chosen, rejected) are unpaired automatically",
    label_keys=("label",),
    from_preferences="flux_kto.data:unpair",
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="kto",
            config_schema=KTOAlgorithmConfig,
            runner="flux_kto.runner:KTORunner",
            data_format="unpaired",
            data_format_spec=UNPAIRED,
            trl_config="trl:KTOConfig",
            description="Kahneman-Tversky Optimization on examples labelled desirable or not (TRL KTOTrainer)",
        )
    )
