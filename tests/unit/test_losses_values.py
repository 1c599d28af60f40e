"""Losses against values worked out by hand on a 2x2 example; each returns a batch mean.

logits [[0, 2], [-1, 0]], targets [[1, 0], [0, 1]]; sigmoid: p(0) = 0.5, p(2) = 0.880797, p(-1) = 0.268941.
"""

from __future__ import annotations

import math

import pytest
import torch

from locbench.config import LossConfig
from locbench.losses import LOSSES, build_loss

LOGITS = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
TARGETS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])

# Per element, row by row:
#   bce   = -log p (y=1), -log(1-p) (y=0):             log 2 = 0.693147, log(1+e^2) = 2.126928, log(1+e^-1) = 0.313262
#   focal = alpha (1-p)^2 (-log p) (y=1), (1-alpha) p^2 (-log(1-p)) (y=0), alpha 0.25:
#           0.25*0.25*0.693147 = 0.043322, 0.75*0.775803*2.126928 = 1.237559, 0.75*0.072329*0.313262 = 0.016994
#   asl   = -log p (y=1, gamma+ 0), p_m^4 (-log(1-p_m)) (y=0), p_m = p - 0.05:
#           0.693147, 0.830797^4*1.776700 = 0.846415, 0.218941^4*0.247103 = 0.000568
BCE = [[0.693147, 2.126928], [0.313262, 0.693147]]
FOCAL = [[0.043322, 1.237559], [0.016994, 0.043322]]
ASL = [[0.693147, 0.846415], [0.000568, 0.693147]]


def _mean(rows: list[list[float]]) -> float:
    return sum(map(sum, rows)) / 4


@pytest.mark.parametrize(("name", "table"), [("bce", BCE), ("focal", FOCAL), ("asl", ASL)])
def test_hand_computed_values(name, table):
    loss = build_loss(LossConfig(name=name))
    got = loss(LOGITS, TARGETS)
    assert got.ndim == 0
    assert got.item() == pytest.approx(_mean(table), abs=2e-6)
    assert loss.elementwise(LOGITS, TARGETS).tolist() == [pytest.approx(r, abs=2e-6) for r in table]


def test_registry_holds_the_three_losses():
    assert LOSSES.names() == ["asl", "bce", "focal"]
    assert all(LOSSES.describe()[n] for n in LOSSES.names())


@pytest.mark.parametrize("name", ["bce", "focal", "asl"])
def test_batch_mean_not_sum(name):
    # twice the batch, same rows: a mean stays the same, a sum would double (timm's ASL sums)
    loss = build_loss(LossConfig(name=name))
    once = loss(LOGITS, TARGETS)
    twice = loss(LOGITS.repeat(2, 1), TARGETS.repeat(2, 1))
    assert twice.item() == pytest.approx(once.item(), rel=1e-6)


@pytest.mark.parametrize(("name", "table"), [("bce", BCE), ("focal", FOCAL), ("asl", ASL)])
def test_class_weights_scale_each_column(name, table):
    weights = torch.tensor([2.0, 0.5])
    got = build_loss(LossConfig(name=name), weights)(LOGITS, TARGETS).item()
    expected = sum(2.0 * r[0] + 0.5 * r[1] for r in table) / 4
    assert got == pytest.approx(expected, abs=2e-6)
    if name == "bce":
        assert got == pytest.approx(0.855714, abs=2e-6)


def test_soft_targets():
    # a CutMix target 0.3 on logit 2: -(0.3 log p + 0.7 log(1-p)) = 0.3*0.126928 + 0.7*2.126928 = 1.526928
    x, y = torch.tensor([[2.0]]), torch.tensor([[0.3]])
    assert build_loss(LossConfig(name="bce"))(x, y).item() == pytest.approx(1.526928, abs=2e-6)
    # focal mixes its positive and negative terms by the same weights
    p = 1 / (1 + math.exp(-2.0))
    pos = 0.25 * (1 - p) ** 2 * -math.log(p)
    neg = 0.75 * p**2 * -math.log(1 - p)
    assert build_loss(LossConfig(name="focal"))(x, y).item() == pytest.approx(0.3 * pos + 0.7 * neg, rel=1e-6)


def test_focal_at_gamma_zero_is_alpha_weighted_bce():
    torch.manual_seed(0)
    x, y = torch.randn(4, 5) * 3, (torch.rand(4, 5) > 0.5).float()
    elem = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
    alpha = 0.3
    expected = (elem * (alpha * y + (1 - alpha) * (1 - y))).mean()
    got = build_loss(LossConfig(name="focal", focal_gamma=0.0, focal_alpha=alpha))(x, y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_asl_without_clip_or_focusing_is_bce():
    torch.manual_seed(1)
    x, y = torch.randn(3, 4), (torch.rand(3, 4) > 0.5).float()
    cfg = LossConfig(name="asl", asl_gamma_neg=0.0, asl_gamma_pos=0.0, asl_clip=0.0)
    assert build_loss(cfg)(x, y).item() == pytest.approx(build_loss(LossConfig())(x, y).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["bce", "focal", "asl"])
def test_finite_on_extreme_logits_and_gradients_flow(name):
    x = torch.tensor([[80.0, -80.0], [30.0, -30.0]], requires_grad=True)
    loss = build_loss(LossConfig(name=name))(x, TARGETS)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert loss.item() > 1.0  # confident and wrong on two of four elements


def test_half_precision_logits_are_computed_in_float32():
    got = build_loss(LossConfig())(LOGITS.half(), TARGETS)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(_mean(BCE), abs=2e-6)
