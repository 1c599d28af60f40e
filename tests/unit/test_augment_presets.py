"""Augmentation presets and batch mixers on 1-, 3- and 4-channel batches."""

from __future__ import annotations

import pytest
import torch

from locbench.augment import AUGMENTATIONS, MIXERS, build_augmentation
from locbench.augment.batch import IntensityJitterBatch, RandomAffineBatch
from locbench.config import AugmentConfig


def _batch(c: int, n: int = 4, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(c)
    x = torch.rand(n, c, size, size, generator=g)
    y = (torch.rand(n, 5, generator=g) > 0.5).float()
    return x, y


def test_registries_list_presets_and_mixers():
    assert AUGMENTATIONS.names() == ["cutmix", "mixup", "none", "standard"]
    assert MIXERS.names() == ["cutmix", "mixup"]


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("name", ["standard", "cutmix", "mixup", "none"])
def test_every_preset_keeps_shape_and_range(name, channels):
    x, y = _batch(channels)
    aug = build_augmentation(AugmentConfig(name=name, intensity=0.2, cutmix_p=1.0, mixup_p=1.0))
    torch.manual_seed(0)
    out_x, out_y = aug(x, y, torch.Generator().manual_seed(0))
    assert out_x.shape == x.shape and out_y.shape == y.shape
    assert out_x.dtype == torch.float32 and torch.isfinite(out_x).all()
    assert out_y.min() >= 0 and out_y.max() <= 1
    if name != "none":
        assert not torch.equal(out_x, x)


def test_none_without_intensity_is_identity():
    x, y = _batch(4)
    out_x, out_y = build_augmentation(AugmentConfig(name="none"))(x, y)
    assert out_x is x and out_y is y


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_standard_without_rotation_translation_or_flip_is_identity(channels):
    x, y = _batch(channels)
    aug = build_augmentation(AugmentConfig(name="standard", rotate=0.0, translate=0.0, flip=False))
    out_x, out_y = aug(x, y, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out_x, x, atol=1e-5, rtol=0)
    assert torch.equal(out_y, y)


def test_flips_are_exact_mirror_images():
    x, _ = _batch(4, n=2)
    t = RandomAffineBatch(rotate=0.0, translate=0.0, flip=True)
    params = {
        "angle": torch.zeros(2),
        "shift": torch.zeros(2, 2),
        "flips": torch.tensor([[True, False], [False, True]]),
    }
    out = t.apply(x, params)
    torch.testing.assert_close(out[0], x[0].flip(-1), atol=1e-5, rtol=0)  # horizontal
    torch.testing.assert_close(out[1], x[1].flip(-2), atol=1e-5, rtol=0)  # vertical


def test_each_sample_gets_its_own_parameters():
    t = RandomAffineBatch()
    p = t.sample_params(16, torch.Generator().manual_seed(0))
    assert p["angle"].unique().numel() == 16
    assert p["angle"].abs().max() <= torch.deg2rad(torch.tensor(20.0)) + 1e-6
    assert p["shift"].abs().max() <= 0.2 + 1e-6  # 10% of the side = 0.2 in grid units spanning [-1, 1]


@pytest.mark.parametrize("name", ["standard", "cutmix", "mixup"])
def test_same_seeds_same_output(name):
    x, y = _batch(4, n=8)
    aug = build_augmentation(AugmentConfig(name=name, intensity=0.3, cutmix_p=1.0, mixup_p=1.0))

    def run(seed: int):
        torch.manual_seed(seed)  # mixers draw from the global generator (the engine seeds it per epoch)
        return aug(x, y, torch.Generator().manual_seed(seed))

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_augmentation_params_do_not_depend_on_the_device_generator_state():
    # parameters are drawn on the CPU from the given generator: the global generator does not change them
    x, y = _batch(3)
    aug = build_augmentation(AugmentConfig(name="standard"))
    torch.manual_seed(1)
    a = aug(x, y, torch.Generator().manual_seed(9))[0]
    torch.manual_seed(2)
    b = aug(x, y, torch.Generator().manual_seed(9))[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_cutmix_mixes_multi_hot_targets_by_area(channels):
    n, size = 6, 32
    # image k is the constant k + 1 in every channel, so each pixel says where it came from
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, channels, size, size).contiguous()
    y = torch.zeros(n, 7)
    for k in range(n):
        y[k, k] = 1.0
        y[k, 6] = 1.0  # a label every image shares stays 1
    mixer = MIXERS.get("cutmix")(AugmentConfig(cutmix_p=1.0))
    for seed in range(5):
        torch.manual_seed(seed)
        out_x, out_y = mixer(x, y)
        assert out_x.shape == x.shape
        for k in range(n):
            pasted = (out_x[k, 0] != k + 1).float().mean().item()
            donors = out_x[k, 0][out_x[k, 0] != k + 1].unique()
            assert donors.numel() <= 1  # one box from one other image
            expected = (1 - pasted) * y[k]
            if donors.numel():
                expected = expected + pasted * y[int(donors.item()) - 1]
                box = out_x[k] != k + 1
                assert torch.equal(box, box[:1].expand_as(box))  # the same box on every stain
            torch.testing.assert_close(out_y[k], expected, atol=1e-6, rtol=0)
            assert out_y[k, 6].item() == pytest.approx(1.0)


def test_mixup_blends_images_and_targets_by_one_weight():
    x, y = _batch(4, n=4)
    torch.manual_seed(0)
    out_x, out_y = MIXERS.get("mixup")(AugmentConfig(mixup_p=1.0))(x, y)
    other = x.roll(1, 0)
    # out = lam * x + (1 - lam) * x.roll(1): solve for lam from the images, check the targets use it
    lam = ((out_x - other) * (x - other)).sum() / ((x - other) ** 2).sum()
    torch.testing.assert_close(out_x, lam * x + (1 - lam) * other, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_y, lam * y + (1 - lam) * y.roll(1, 0), atol=1e-5, rtol=0)


def test_mixers_respect_probability_and_tiny_batches():
    x, y = _batch(3)
    never = MIXERS.get("cutmix")(AugmentConfig(cutmix_p=0.0))
    assert never(x, y) == (x, y)
    always = MIXERS.get("mixup")(AugmentConfig(mixup_p=1.0))
    one_x, one_y = x[:1], y[:1]
    assert always(one_x, one_y) == (one_x, one_y)  # nothing to mix a single image with


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_intensity_jitter_any_channel_count(channels):
    x, _ = _batch(channels)
    out = IntensityJitterBatch(magnitude=0.5)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    zero = IntensityJitterBatch(magnitude=0.0)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(zero, x, atol=1e-6, rtol=0)


def test_standard_adds_intensity_jitter_only_when_asked():
    assert len(build_augmentation(AugmentConfig()).transforms) == 1
    with_jitter = build_augmentation(AugmentConfig(intensity=0.1)).transforms
    assert [type(t) for t in with_jitter] == [RandomAffineBatch, IntensityJitterBatch]
    assert build_augmentation(AugmentConfig(name="cutmix")).mixer is not None
