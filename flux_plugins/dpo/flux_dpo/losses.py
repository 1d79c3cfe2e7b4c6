"""TRL 1.16's DPO loss types as standalone Flux losses, registered under their TRL names.

Each function takes :class:`flux_dpo.inputs.PreferenceLogps` plus ``beta`` and
``label_smoothing`` and returns one loss per example; the formulas follow
``trl.DPOTrainer._compute_loss`` (reverse-KL scores, i.e. standard DPO) line for line,
which the parity tests check. A reference-free batch (``ref_*`` is ``None``) uses a
zero reference. torch is imported inside the functions so that registering them stays
cheap.
"""

from __future__ import annotations

from flux_dpo.inputs import PreferenceLogps

# Losses whose TRL formula reads label_smoothing; the others ignore it (Flux warns).
USES_LABEL_SMOOTHING = frozenset({"robust", "exo_pair", "aot", "aot_unpaired"})


def _delta(inputs: PreferenceLogps):
    return inputs.chosen_logratios - inputs.rejected_logratios


def sigmoid(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """Standard DPO: -log sigmoid(beta * (chosen logratio - rejected logratio))."""
    from torch.nn import functional as F

    return -F.logsigmoid(beta * _delta(inputs))


def hinge(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """SLiC hinge loss: relu(1 - beta * delta)."""
    import torch

    return torch.relu(1 - beta * _delta(inputs))


def ipo(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """IPO on length-normalised log-ratios: (delta/len - 1/(2 beta))^2."""
    chosen = inputs.chosen_logratios / inputs.chosen_lengths.clamp(min=1.0)
    rejected = inputs.rejected_logratios / inputs.rejected_lengths.clamp(min=1.0)
    return (chosen - rejected - 1 / (2 * beta)) ** 2


def exo_pair(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """EXO-pref (Eq. 16 of 2402.00856); label_smoothing is its epsilon (must be > 0)."""
    import torch
    from torch.nn import functional as F

    delta = _delta(inputs)
    epsilon = torch.tensor(label_smoothing, device=delta.device)
    qw, log_qw = torch.sigmoid(beta * delta), F.logsigmoid(beta * delta)
    ql, log_ql = torch.sigmoid(-beta * delta), F.logsigmoid(-beta * delta)
    return qw * (log_qw - torch.log1p(-epsilon)) + ql * (log_ql - torch.log(epsilon))


def nca_pair(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """NCA pairwise loss."""
    from torch.nn import functional as F

    chosen, rejected = beta * inputs.chosen_logratios, beta * inputs.rejected_logratios
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


def robust(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """Robust DPO; label_smoothing is the label-flip probability in [0, 0.5)."""
    from torch.nn import functional as F

    delta = _delta(inputs)
    clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
    flipped = -label_smoothing * F.logsigmoid(-beta * delta)
    return (clean - flipped) / (1 - 2 * label_smoothing)


def bco_pair(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """BCO pairwise loss."""
    from torch.nn import functional as F

    return -F.logsigmoid(beta * inputs.chosen_logratios) - F.logsigmoid(-beta * inputs.rejected_logratios)


def sppo_hard(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """SPPO with hard win probabilities."""
    return (inputs.chosen_logratios - 0.5 / beta) ** 2 + (inputs.rejected_logratios + 0.5 / beta) ** 2


def _smoothed_logsigmoid(delta, beta: float, label_smoothing: float):
    from torch.nn import functional as F

    return -F.logsigmoid(beta * delta) * (1 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing


def aot(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """AOT (paired): sorted policy log-ratio gaps against sorted reference gaps."""
    import torch

    logratios = inputs.chosen_logps - inputs.rejected_logps
    if inputs.reference_free:
        ref_logratios = torch.zeros_like(logratios)
    else:
        ref_logratios = inputs.ref_chosen_logps - inputs.ref_rejected_logps
    delta = torch.sort(logratios, dim=0)[0] - torch.sort(ref_logratios, dim=0)[0]
    return _smoothed_logsigmoid(delta, beta, label_smoothing)


def aot_unpaired(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """AOT (unpaired): sorted chosen log-ratios against sorted rejected log-ratios."""
    import torch

    delta = torch.sort(inputs.chosen_logratios, dim=0)[0] - torch.sort(inputs.rejected_logratios, dim=0)[0]
    return _smoothed_logsigmoid(delta, beta, label_smoothing)


def apo_zero(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """APO-zero: raise chosen likelihood, lower rejected."""
    import torch

    return (1 - torch.sigmoid(beta * inputs.chosen_logratios)) + torch.sigmoid(beta * inputs.rejected_logratios)


def apo_down(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """APO-down: lower both, rejected more."""
    import torch

    chosen = torch.sigmoid(beta * inputs.chosen_logratios)
    return chosen + (1 - torch.sigmoid(beta * (inputs.chosen_logratios - inputs.rejected_logratios)))


def discopop(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0, tau: float = 0.05):
    """DiscoPOP (Eq. 5 of 2406.08414); ``tau`` comes from ``algorithm.loss_kwargs``."""
    import torch
    from torch.nn import functional as F

    logits = beta * _delta(inputs)
    modulation = torch.sigmoid(logits / tau)
    return -F.logsigmoid(logits) * (1 - modulation) + torch.exp(-logits) * modulation


def sft(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """Negative log-likelihood of the chosen completions, averaged over their tokens."""
    batch_loss = -inputs.chosen_logps.sum() / inputs.chosen_lengths.sum().clamp(min=1.0)
    return batch_loss.expand(inputs.chosen_logps.size(0))


def sigmoid_norm(inputs: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0):
    """DPO on length-normalised log-ratios."""
    from torch.nn import functional as F

    chosen = inputs.chosen_logratios / inputs.chosen_lengths.clamp(min=1.0)
    rejected = inputs.rejected_logratios / inputs.rejected_lengths.clamp(min=1.0)
    return -F.logsigmoid(beta * (chosen - rejected))


TRL_LOSSES = {
    "sigmoid": sigmoid,
    "hinge": hinge,
    "ipo": ipo,
    "exo_pair": exo_pair,
    "nca_pair": nca_pair,
    "robust": robust,
    "bco_pair": bco_pair,
    "sppo_hard": sppo_hard,
    "aot": aot,
    "aot_unpaired": aot_unpaired,
    "apo_zero": apo_zero,
    "apo_down": apo_down,
    "discopop": discopop,
    "sft": sft,
    "sigmoid_norm": sigmoid_norm,
}
