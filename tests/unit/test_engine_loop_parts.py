"""The training loop's parts: model quirks, gradient clipping, per-stain transforms and the distinct-stain
shortcut of the training inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.utils import adaptive_clip_grad

from locbench.augment import build_augmentation
from locbench.config import AugmentConfig, ModelConfig, OptimConfig
from locbench.engine.data import to_unit
from locbench.engine.inputs import Normalize, TrainInputs
from locbench.engine.optim import clip_gradients
from locbench.models import Quirks, build_model, quirks


def test_quirks_of_nfnets_and_of_everything_else():
    assert quirks("eca_nfnet_l0") == quirks("nfnet_l0") == Quirks(clip_mode="agc", channels_last=False)
    assert quirks("resnet50") == quirks("test_resnet") == Quirks(clip_mode="norm", channels_last=True)
    assert build_model(ModelConfig(backbone="test_resnet", hidden=8), num_classes=3, in_chans=3).quirks == Quirks()


def _with_grads(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    net(torch.randn(5, 4)).pow(2).sum().mul(100).backward()
    return net


@pytest.mark.parametrize("model_mode", ["agc", "norm"])
def test_auto_clipping_follows_the_model_quirks(model_mode):
    net, expected = _with_grads(), _with_grads()
    clip_gradients(OptimConfig(clip_grad=0.1, clip_mode="auto"), net, Quirks(clip_mode=model_mode))
    if model_mode == "agc":
        adaptive_clip_grad(expected.parameters(), clip_factor=0.1)
    else:
        torch.nn.utils.clip_grad_norm_(expected.parameters(), 0.1)
    for a, b in zip(net.parameters(), expected.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    untouched, before = _with_grads(), [p.grad.clone() for p in _with_grads().parameters()]
    clip_gradients(OptimConfig(clip_grad=None), untouched, Quirks(clip_mode="agc"))
    assert all(torch.equal(p.grad, g) for p, g in zip(untouched.parameters(), before, strict=True))


def test_transforms_say_whether_they_act_on_each_stain_alone():
    assert build_augmentation(AugmentConfig()).per_stain  # flips, rotation, shift: the same for every stain
    assert build_augmentation(AugmentConfig(name="cutmix")).per_stain  # mixers move whole images alike
    assert not build_augmentation(AugmentConfig(intensity=0.2)).per_stain  # draws per channel
    assert build_augmentation(AugmentConfig(name="none")).per_stain


@pytest.mark.parametrize("intensity", [0.0, 0.2])
def test_a_repeated_stain_is_augmented_once_with_the_same_pixels(intensity):
    channels = ["green", "green", "green"]
    mean, std = [0.2, 0.2, 0.2], [0.1, 0.1, 0.1]
    augment = build_augmentation(AugmentConfig(intensity=intensity))
    inputs = TrainInputs(channels, augment, mean, std, torch.device("cpu"), channels_last=False)
    assert (inputs.pick is not None) == (intensity == 0.0)  # intensity jitter draws per channel: the full path
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (1, 32, 32), generator=g, dtype=torch.uint8).repeat(4, 3, 1, 1)
    y = torch.zeros(4, 5)
    got, _ = inputs(x, y, torch.Generator().manual_seed(1))
    full, _ = copy.deepcopy(augment)(to_unit(x), y, torch.Generator().manual_seed(1))
    expected = Normalize(mean, std)(full)
    assert torch.equal(got, expected) and got.shape == (4, 3, 32, 32)
