"""CAMs on tiny timm models: shapes, range, no side effects on the model, and a localization sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from locbench.errors import LocbenchError
from locbench.explain import compute_cams, default_target_layer

SIZE = 64


def _make(name: str, in_chans: int, num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"img_size": SIZE} if "vit" in name else {}
    return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _hooks_left(model: nn.Module) -> int:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, n)) for m in model.modules() for n in names)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
@pytest.mark.parametrize("in_chans", [3, 4])
@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_cams_shape_range_and_no_side_effects(name: str, in_chans: int, method: str) -> None:
    model = _make(name, in_chans)
    model.train()
    model.get_submodule(next(n for n, _ in model.named_children())).eval()  # a mixed mode must survive too
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, in_chans, SIZE, SIZE)

    cams = compute_cams(model, x, [[0, 3], [4, 1]], method=method)

    assert cams.shape == (2, 2, SIZE, SIZE)
    assert cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    # An untrained model may have no positive evidence for some class (an all-zero map), but not for all,
    # and a real map varies over the image.
    assert max(float(c.std()) for c in cams.reshape(4, -1)) > 0.05
    assert _hooks_left(model) == 0
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    # Eval mode during the call: BatchNorm running statistics must not move.
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_one_channel_and_flat_class_list() -> None:
    model = _make("test_resnet", 1)
    cams = compute_cams(model, torch.rand(3, 1, 32, 32), [2], method="gradcam")
    assert cams.shape == (3, 1, 32, 32)
    assert _hooks_left(model) == 0


def test_works_under_no_grad_with_frozen_params_and_keeps_grads() -> None:
    model = _make("test_vit", 3)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        cams = compute_cams(model, torch.rand(1, 3, SIZE, SIZE), [0, 1])
    assert cams.shape == (1, 2, SIZE, SIZE) and cams.max() > 0.5

    model = _make("test_resnet", 3)
    sentinel = torch.full_like(model.fc.weight, 7.0)
    model.fc.weight.grad = sentinel
    compute_cams(model, torch.rand(1, 3, 32, 32), [0])
    assert model.fc.weight.grad is sentinel


class _Wrapped(nn.Module):
    """Shaped like a locbench model: a timm backbone without classifier plus a custom head."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.backbone = _make(name, 4, num_classes=0)
        self.head = nn.Linear(self.backbone.num_features, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def test_default_target_layer_per_family_and_through_wrapper() -> None:
    resnet = _make("test_resnet", 3)
    assert default_target_layer(resnet) is resnet.layer4
    vit = _make("test_vit", 3)
    assert default_target_layer(vit) is vit.blocks[-1].norm1
    effnet = _make("test_efficientnet", 3)
    assert default_target_layer(effnet) is effnet.get_submodule(effnet.feature_info[-1]["module"])

    wrapped = _Wrapped("test_vit")
    assert default_target_layer(wrapped) is wrapped.backbone.blocks[-1].norm1
    # What a finished run's model() looks like: input normalisation in front of the wrapper.
    run_model = nn.Sequential(nn.Identity(), _Wrapped("test_resnet"))
    assert default_target_layer(run_model) is run_model[1].backbone.layer4
    cams = compute_cams(run_model, torch.rand(1, 4, SIZE, SIZE), [1])
    assert cams.shape == (1, 1, SIZE, SIZE) and _hooks_left(run_model) == 0
    cams = compute_cams(wrapped, torch.rand(2, 4, SIZE, SIZE), [[0], [2]], method="gradcam++")
    assert cams.shape == (2, 1, SIZE, SIZE) and cams.max() > 0.5
    assert _hooks_left(wrapped) == 0


class _HalfModel(nn.Module):
    """A CNN whose logits see only one half of the image (the other half is zeroed before the convs)."""

    def __init__(self, half: str, size: int = 32) -> None:
        super().__init__()
        keep = torch.zeros(1, 1, size, size)
        if half == "left":
            keep[..., : size // 2] = 1
        else:
            keep[..., : size // 2, :] = 1
        self.register_buffer("keep", keep)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.ReLU(),
        )
        self.head = nn.Linear(8, 2)
        torch.manual_seed(0)
        with torch.no_grad():  # positive weights: more signal, larger logit, so the CAM is not all zero
            for m in (*self.features, self.head):
                if hasattr(m, "weight"):
                    m.weight.abs_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x * self.keep).mean(dim=(2, 3)))


@pytest.mark.parametrize("half", ["left", "top"])
def test_gradcam_mass_follows_what_the_logit_sees(half: str) -> None:
    model = _HalfModel(half)
    x = torch.rand(2, 3, 32, 32)
    cams = compute_cams(model, x, [1], method="gradcam", target_layer=model.features)
    for cam in cams[:, 0]:
        left = cam[:, :16].sum() / cam.sum()
        top = cam[:16, :].sum() / cam.sum()
        if half == "left":
            assert left > 0.9
        else:  # a transposed map would put the mass on the left instead
            assert top > 0.9 and 0.3 < left < 0.7


def test_bad_arguments_raise() -> None:
    model = _make("test_resnet", 3)
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(LocbenchError, match="unknown CAM method"):
        compute_cams(model, x, [0], method="nope")
    with pytest.raises(LocbenchError, match="different lengths"):
        compute_cams(model, x, [[0], [1, 2]])
    with pytest.raises(LocbenchError, match="out of range"):
        compute_cams(model, x, [9])
    with pytest.raises(LocbenchError, match="empty batch"):
        compute_cams(model, x[:0], [0])
    with pytest.raises(LocbenchError, match="float"):
        compute_cams(model, x.to(torch.uint8), [0])
    assert _hooks_left(model) == 0
