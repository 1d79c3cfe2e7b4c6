"""An example Flux plugin that adds one DPO loss: ``algorithm.loss: margin_sigmoid``.

``margin_sigmoid`` is DPO with a target margin (as in SimPO's gamma): the policy must
beat the reference-adjusted rejected log-ratio by ``margin`` before the loss flattens::

    loss = -log sigmoid(beta * (chosen_logratio - rejected_logratio) - margin)

Enable it in YAML::

    algorithm:
      name: dpo
      loss: margin_sigmoid
      loss_kwargs: {margin: 0.5}
"""

from flux_core import hookimpl

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"


def margin_sigmoid(inputs, *, beta, label_smoothing=0.0, margin=0.5):
    """Per-example DPO loss with a target margin; ``inputs`` is a PreferenceLogps."""
    import torch.nn.functional as F  # imported here so `flux plugins` stays fast

    delta = inputs.chosen_logratios - inputs.rejected_logratios
    return -F.logsigmoid(beta * delta - margin)


@hookimpl
def register_losses(register):
    register("margin_sigmoid", margin_sigmoid, algorithm="dpo")
