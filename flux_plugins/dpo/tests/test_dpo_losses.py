"""Each registered TRL loss on hand-computed tensors (torchtune style)."""

import math

import pytest
import torch
from flux_dpo import losses
from flux_dpo.inputs import PreferenceLogps


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# Two examples. Chosen/rejected log-ratios: (1.0, -1.0) and (0.5, 0.0)
POLICY_CHOSEN = [-4.0, -3.0]
POLICY_REJECTED = [-6.0, -4.0]
REF_CHOSEN = [-5.0, -3.5]
REF_REJECTED = [-5.0, -4.0]
LENGTHS_CHOSEN = [4.0, 2.0]
LENGTHS_REJECTED = [2.0, 5.0]
CHOSEN_LR = [1.0, 0.5]
REJECTED_LR = [-1.0, 0.0]
BETA = 0.5


def batch(reference: bool = True) -> PreferenceLogps:
    t = torch.tensor
    return PreferenceLogps(
        chosen_logps=t(POLICY_CHOSEN),
        rejected_logps=t(POLICY_REJECTED),
        ref_chosen_logps=t(REF_CHOSEN) if reference else None,
        ref_rejected_logps=t(REF_REJECTED) if reference else None,
        chosen_lengths=t(LENGTHS_CHOSEN),
        rejected_lengths=t(LENGTHS_REJECTED),
    )


def delta(i):
    return CHOSEN_LR[i] - REJECTED_LR[i]


EXPECTED = {
    "sigmoid": lambda i, ls: -logsig(BETA * delta(i)),
    "hinge": lambda i, ls: max(0.0, 1 - BETA * delta(i)),
    "ipo": lambda i, ls: (
        (CHOSEN_LR[i] / LENGTHS_CHOSEN[i] - REJECTED_LR[i] / LENGTHS_REJECTED[i] - 1 / (2 * BETA)) ** 2
    ),
    "nca_pair": lambda i, ls: (
        -logsig(BETA * CHOSEN_LR[i]) - 0.5 * logsig(-BETA * CHOSEN_LR[i]) - 0.5 * logsig(-BETA * REJECTED_LR[i])
    ),
    "robust": lambda i, ls: (-(1 - ls) * logsig(BETA * delta(i)) + ls * logsig(-BETA * delta(i))) / (1 - 2 * ls),
    "bco_pair": lambda i, ls: -logsig(BETA * CHOSEN_LR[i]) - logsig(-BETA * REJECTED_LR[i]),
    "sppo_hard": lambda i, ls: (CHOSEN_LR[i] - 0.5 / BETA) ** 2 + (REJECTED_LR[i] + 0.5 / BETA) ** 2,
    "apo_zero": lambda i, ls: (1 - sig(BETA * CHOSEN_LR[i])) + sig(BETA * REJECTED_LR[i]),
    "apo_down": lambda i, ls: sig(BETA * CHOSEN_LR[i]) + 1 - sig(BETA * delta(i)),
    "sigmoid_norm": lambda i, ls: (
        -logsig(BETA * (CHOSEN_LR[i] / LENGTHS_CHOSEN[i] - REJECTED_LR[i] / LENGTHS_REJECTED[i]))
    ),
    "exo_pair": lambda i, ls: (
        sig(BETA * delta(i)) * (logsig(BETA * delta(i)) - math.log(1 - ls))
        + sig(-BETA * delta(i)) * (logsig(-BETA * delta(i)) - math.log(ls))
    ),
    "discopop": lambda i, ls: (
        -logsig(BETA * delta(i)) * (1 - sig(BETA * delta(i) / 0.05))
        + math.exp(-BETA * delta(i)) * sig(BETA * delta(i) / 0.05)
    ),
    # mean NLL per chosen token over the batch, repeated per example
    "sft": lambda i, ls: -sum(POLICY_CHOSEN) / sum(LENGTHS_CHOSEN),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_loss_matches_hand_computation(name, label_smoothing):
    if name == "exo_pair" and label_smoothing == 0.0:
        pytest.skip("exo_pair needs label_smoothing > 0 (its epsilon)")
    got = losses.TRL_LOSSES[name](batch(), beta=BETA, label_smoothing=label_smoothing)
    expected = [EXPECTED[name](i, label_smoothing) for i in range(2)]
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_aot_sorts_logratio_gaps_across_the_batch():
    # policy gaps chosen-rejected: [2.0, 1.0]; reference gaps: [0.0, 0.5] -> sorted [1, 2] - [0, 0.5]
    for ls in (0.0, 0.2):
        got = losses.aot(batch(), beta=BETA, label_smoothing=ls)
        deltas = [1.0 - 0.0, 2.0 - 0.5]
        expected = [-logsig(BETA * d) * (1 - ls) - logsig(-BETA * d) * ls for d in deltas]
        assert got.tolist() == pytest.approx(expected, rel=1e-5)


def test_aot_unpaired_sorts_chosen_and_rejected_separately():
    got = losses.aot_unpaired(batch(), beta=BETA)
    deltas = [0.5 - (-1.0), 1.0 - 0.0]  # sorted chosen [0.5, 1.0] - sorted rejected [-1, 0]
    assert got.tolist() == pytest.approx([-logsig(BETA * d) for d in deltas], rel=1e-5)


def test_reference_free_uses_a_zero_reference():
    free = losses.sigmoid(batch(reference=False), beta=BETA)
    expected = [-logsig(BETA * (POLICY_CHOSEN[i] - POLICY_REJECTED[i])) for i in range(2)]
    assert free.tolist() == pytest.approx(expected, rel=1e-6)


def test_every_trl_1_16_loss_type_is_registered():
    import inspect
    import re

    from trl.trainer import dpo_trainer

    source = inspect.getsource(dpo_trainer.DPOTrainer._compute_loss)
    trl_names = set(re.findall(r'loss_type == "([a-z_]+)"', source))
    assert len(trl_names) == 15
    from flux_core.registry import get_registry

    registered = {name for algorithm, name in get_registry().losses if algorithm == "dpo"}
    assert trl_names <= registered


def test_losses_are_differentiable():
    inputs = batch()
    chosen = inputs.chosen_logps.clone().requires_grad_()
    grads_batch = PreferenceLogps(
        chosen,
        inputs.rejected_logps,
        inputs.ref_chosen_logps,
        inputs.ref_rejected_logps,
        inputs.chosen_lengths,
        inputs.rejected_lengths,
    )
    for name, fn in losses.TRL_LOSSES.items():
        chosen.grad = None
        fn(grads_batch, beta=BETA, label_smoothing=0.1).mean().backward()
        assert chosen.grad is not None and torch.isfinite(chosen.grad).all(), name
