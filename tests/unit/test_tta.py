"""Test-time augmentation as a module: the views, invariance, probability means, the config key."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from locbench.commands._level import TTA_MODES as CLI_TTA_MODES
from locbench.config import load_config
from locbench.errors import LocbenchError
from locbench.models import TTA_MODES, TTA_PASSES, ProbabilityMean, apply_view, tta_views, with_tta


def _d8_symmetric(size: int = 16, channels: int = 4) -> torch.Tensor:
    """An image equal to each of its 8 rotations and mirrors: a function of (min, max) of the distances to the edges
    after folding both axes, symmetric in i and j."""
    g = torch.Generator().manual_seed(0)
    table = torch.rand(channels, size, size, generator=g)
    table = table + table.transpose(-1, -2)
    i = torch.arange(size)
    fold = torch.minimum(i, size - 1 - i)
    a, b = fold[:, None].expand(size, size), fold[None, :].expand(size, size)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    return table[:, lo, hi].unsqueeze(0)


class _Conv(nn.Module):
    """A small CNN that is not flip-invariant (a convolution with a random kernel, then a weighted spatial sum)."""

    def __init__(self, channels: int = 4, classes: int = 5, size: int = 16) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(8, size, size))
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((torch.relu(self.conv(x)) * self.weight).mean(dim=(-1, -2)))


class _Invariant(nn.Module):
    """Invariant to every flip and rotation: per-channel means of the pixels, then a linear layer."""

    def __init__(self, channels: int = 4, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(-1, -2)))


def _probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.sigmoid(model(x))


def test_views_are_the_dihedral_group():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert {len(tta_views(m)) for m in TTA_MODES} == {1, 2, 4, 8}
    assert [len(tta_views(m)) for m in TTA_MODES] == [TTA_PASSES[m] for m in TTA_MODES]
    d8 = {tuple(apply_view(x, v).flatten().tolist()) for v in tta_views("d8")}
    assert len(d8) == 8  # 8 distinct images: every symmetry of the square once
    expected = {tuple(torch.rot90(xx, k, (-2, -1)).flatten().tolist()) for k in range(4) for xx in (x, x.flip(-1))}
    assert d8 == expected
    assert {tuple(apply_view(x, v).flatten().tolist()) for v in tta_views("flips")} == {
        tuple(x.flip(d).flatten().tolist()) if d else tuple(x.flatten().tolist()) for d in ((), (-1,), (-2,), (-1, -2))
    }


def test_none_is_the_model_itself():
    model = _Conv()
    assert with_tta(model, "none") is model
    with pytest.raises(ValueError, match="use one of none, hflip, flips, d8"):
        with_tta(model, "rot")


@pytest.mark.parametrize("mode", ["hflip", "flips", "d8"])
def test_symmetric_input_gives_the_same_output(mode):
    x = _d8_symmetric()
    for v in tta_views("d8"):
        assert torch.equal(apply_view(x, v), x)
    model = _Conv()
    assert torch.allclose(_probs(with_tta(model, mode), x), _probs(model, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["hflip", "flips", "d8"])
def test_invariant_model_gives_the_same_output_on_any_input(mode):
    x = torch.rand(3, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    model = _Invariant()
    assert torch.allclose(_probs(with_tta(model, mode), x), _probs(model, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["hflip", "flips", "d8"])
def test_non_symmetric_input_differs_and_tta_output_is_invariant(mode):
    x = torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    model, tta = _Conv(), with_tta(_Conv(), mode)
    plain = _probs(model, x)
    averaged = _probs(tta, x)
    assert (averaged - plain).abs().max() > 1e-3  # the augmentation changes a non-invariant model's output
    # the mean over the views is the mean of the plain model's probabilities over the transformed inputs ...
    want = torch.stack([_probs(model, apply_view(x, v)) for v in tta_views(mode)]).mean(0)
    assert torch.allclose(averaged, want, atol=1e-6, rtol=0)
    # ... and, the views being a group, the same whichever of them the input arrives in
    for v in tta_views(mode):
        assert torch.allclose(_probs(tta, apply_view(x, v)), averaged, atol=1e-6, rtol=0)


def test_probability_mean_of_models_is_the_mean_probability():
    x = torch.rand(3, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    a, b = _Conv(), _Invariant()
    mean = ProbabilityMean([a, b], tta_views("hflip"))
    assert mean.passes == 4
    want = (_probs(a, x) + _probs(a, x.flip(-1)) + _probs(b, x) + _probs(b, x.flip(-1))) / 4
    assert torch.allclose(_probs(mean, x), want, atol=1e-6, rtol=0)


def test_saturated_probabilities_survive_the_logit():
    class Const(nn.Module):
        def forward(self, x):
            return torch.tensor([[1e4, -1e4, 0.0]]).expand(x.shape[0], 3)

    p = _probs(with_tta(Const(), "d8"), torch.zeros(2, 1, 4, 4))
    assert torch.equal(p, torch.tensor([[1.0, 0.0, 0.5]] * 2))


def test_config_key_and_cli_choices():
    assert load_config(None, {"infer.tta": "d8"}).infer.tta == "d8"
    assert load_config(None).infer.tta == "none"
    with pytest.raises(LocbenchError, match="infer.tta must be one of none, hflip, flips, d8"):
        load_config(None, {"infer.tta": "rot90"})
    assert CLI_TTA_MODES == TTA_MODES


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "RUN"],
        ["predict", "RUN", "--data", "D", "--out", "o.csv"],
        ["cells", "evaluate", "RUN"],
        ["cells", "predict", "RUN", "--data", "D", "--out", "o.csv"],
    ],
)
def test_every_command_that_predicts_takes_tta(argv):
    from locbench.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(argv).tta is None  # None: the run's own infer.tta
    assert parser.parse_args([*argv, "--tta", "d8"]).tta == "d8"


def test_tta_is_a_sweep_axis(tmp_path):
    from locbench.sweep.grid import load_sweep

    spec = tmp_path / "tta.yaml"
    spec.write_text("name: t\nconfig:\n  model: {backbone: test_resnet}\ngrid:\n  infer.tta: [none, d8]\nseeds: [0]\n")
    points = load_sweep(spec).points
    assert [p.config.infer.tta for p in points] == ["none", "d8"]
    assert len({p.run_id for p in points}) == 2
