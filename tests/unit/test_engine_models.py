"""Model factory: timm's tiny test models with 1/3/4 input channels, heads, pretrained weights from a file."""

from __future__ import annotations

import pytest
import torch

from locbench.config import ModelConfig
from locbench.errors import LocbenchError
from locbench.models import HEADS, LocModel, build_model, count_params, measure_gmacs

pytest_plugins = ["fixtures.synth_data"]

TINY = ["test_resnet", "test_efficientnet", "test_vit", "test_nfnet"]


@pytest.mark.parametrize("in_chans", [1, 3, 4])
@pytest.mark.parametrize("backbone", TINY)
def test_build_forward_backward(backbone, in_chans, one_thread):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, hidden=16), num_classes=19, in_chans=in_chans)
    assert isinstance(model, LocModel)
    x = torch.rand(2, in_chans, 32, 32)
    out = model(x)
    assert out.shape == (2, 19)
    out.sum().backward()
    first = next(p for p in model.backbone.parameters() if p.ndim == 4)
    assert first.shape[1] == in_chans and first.grad is not None
    # the backbone's own classifier is gone: the head is the only thing that maps to classes
    assert model.backbone.num_features == model.head[0].in_features


def test_heads_shapes_and_hidden_width():
    assert HEADS.names() == ["linear", "mlp"]
    mlp = HEADS.get("mlp")(96, 19, hidden=512, dropout=0.1)
    linear = HEADS.get("linear")(96, 28)
    assert [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] == [512, 19]
    assert [m.out_features for m in linear if isinstance(m, torch.nn.Linear)] == [28]
    assert any(isinstance(m, torch.nn.ReLU) for m in mlp)
    feats = torch.rand(3, 96)
    assert mlp(feats).shape == (3, 19) and linear(feats).shape == (3, 28)


@pytest.mark.parametrize("head", ["mlp", "linear"])
def test_head_choice_reaches_the_model(head, one_thread):
    model = build_model(ModelConfig(backbone="test_resnet", head=head, hidden=24), num_classes=5, in_chans=3)
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert len(linears) == (2 if head == "mlp" else 1)
    assert linears[-1].out_features == 5
    if head == "mlp":
        assert linears[0].out_features == 24


def test_same_seed_same_weights(one_thread):
    cfg = ModelConfig(backbone="test_efficientnet")
    torch.manual_seed(3)
    a = build_model(cfg, num_classes=4, in_chans=4).state_dict()
    torch.manual_seed(3)
    b = build_model(cfg, num_classes=4, in_chans=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cost_measures(one_thread):
    model = build_model(ModelConfig(backbone="test_resnet"), num_classes=19, in_chans=4)
    assert count_params(model) == sum(p.numel() for p in model.parameters()) > 300_000
    small, large = measure_gmacs(model, 4, 32), measure_gmacs(model, 4, 64)
    assert 0 < small < large and large == pytest.approx(4 * small, rel=0.05)  # conv cost grows with the area
    assert model.training  # measuring does not leave the model in eval mode


def test_unknown_backbone_is_a_locbench_error():
    with pytest.raises(LocbenchError, match="unknown backbone 'test_resnett'.*Close matches: test_resnet"):
        build_model(ModelConfig(backbone="test_resnett"), num_classes=3, in_chans=3)


@pytest.fixture
def timm_weights(tmp_path):
    """A test_resnet state dict (ImageNet-style, 3 channels, 1000 classes) saved with safetensors."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(123)
    state = timm.create_model("test_resnet").state_dict()
    path = tmp_path / "test_resnet.safetensors"
    save_file(state, str(path))
    return path, state


@pytest.mark.parametrize("in_chans", [1, 3, 4])
def test_pretrained_from_local_file_adapts_first_conv(timm_weights, in_chans, one_thread):
    path, state = timm_weights
    cfg = ModelConfig(backbone="test_resnet", pretrained=True, pretrained_file=str(path))
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=19, in_chans=in_chans)
    w = state["conv1.0.weight"]  # (out, 3, k, k)
    got = model.backbone.state_dict()["conv1.0.weight"]
    # timm's adaptation, written out: 1 channel sums RGB; more repeat R,G,B,R,... scaled by 3/in_chans
    if in_chans == 1:
        expected = w.sum(dim=1, keepdim=True)
    else:
        expected = w.repeat(1, 2, 1, 1)[:, :in_chans] * (3 / in_chans)
    torch.testing.assert_close(got, expected)
    # every other backbone tensor comes from the file too
    assert torch.equal(model.backbone.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    torch.manual_seed(0)
    scratch = build_model(ModelConfig(backbone="test_resnet"), num_classes=19, in_chans=in_chans)
    assert not torch.equal(scratch.backbone.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])


def test_missing_pretrained_file_is_a_clear_error(tmp_path):
    cfg = ModelConfig(backbone="test_resnet", pretrained=True, pretrained_file=str(tmp_path / "nope.safetensors"))
    with pytest.raises(LocbenchError, match=r"model.pretrained_file .*nope.safetensors does not exist"):
        build_model(cfg, num_classes=3, in_chans=3)


def test_offline_pretrained_download_gives_the_hint(tmp_path, monkeypatch, one_thread):
    import huggingface_hub.constants

    # no network and an empty cache: what a user on an offline cluster node sees
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("LOCBENCH_WEIGHTS", str(tmp_path / "weights"))
    with pytest.raises(LocbenchError) as e:
        build_model(ModelConfig(backbone="test_resnet", pretrained=True), num_classes=3, in_chans=4)
    msg = str(e.value)
    assert "test_resnet (timm test_resnet.r160_in1k): not in" in msg
    assert "locbench weights import FILE --backbone test_resnet" in msg and "model.pretrained=false" in msg


def test_pretrained_file_of_another_model_is_refused(tmp_path, one_thread):
    # timm loads non-strictly once the classifier is dropped: without a check this trains from random init
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"encoder.stem.weight": torch.zeros(4, 3, 3, 3), "encoder.norm.bias": torch.zeros(4)}, str(other))
    cfg = ModelConfig(backbone="test_resnet", pretrained=True, pretrained_file=str(other))
    with pytest.raises(LocbenchError, match=r"other.safetensors does not hold test_resnet weights: (\d+) of \1 "):
        build_model(cfg, num_classes=3, in_chans=3)


def test_pretrained_file_with_wrong_shapes_is_reported(tmp_path, one_thread):
    import timm
    from safetensors.torch import save_file

    wide = tmp_path / "wide.safetensors"
    save_file(timm.create_model("test_resnet", stem_width=8).state_dict(), str(wide))
    cfg = ModelConfig(backbone="test_resnet", pretrained=True, pretrained_file=str(wide))
    with pytest.raises(LocbenchError, match=r"wide.safetensors does not fit 'test_resnet' \(RuntimeError: .*mismatch"):
        build_model(cfg, num_classes=3, in_chans=3)


def test_fixed_size_models_are_resized_to_the_image_size(tmp_path, one_thread):
    # vit_tiny_patch16_224 asserts on any input but 224 px unless told the size (the study trains at 256 px)
    import timm
    from safetensors.torch import save_file

    cfg = ModelConfig(backbone="vit_tiny_patch16_224", hidden=16)
    x = torch.rand(2, 4, 64, 64)
    with pytest.raises(AssertionError, match="doesn't match model"):
        build_model(cfg, num_classes=3, in_chans=4)(x)
    model = build_model(cfg, num_classes=3, in_chans=4, img_size=64)
    assert model(x).shape == (2, 3)
    # pretrained weights are loaded first, then their position embeddings resampled (16 patches + class token)
    torch.manual_seed(1)
    path = tmp_path / "vit.safetensors"
    state = timm.create_model("vit_tiny_patch16_224").state_dict()
    save_file(state, str(path))
    pre = build_model(
        ModelConfig(backbone="vit_tiny_patch16_224", pretrained=True, pretrained_file=str(path)),
        num_classes=3,
        in_chans=3,
        img_size=64,
    )
    pos = pre.backbone.state_dict()["pos_embed"]
    assert pos.shape == (1, 1 + 16, 192)
    assert torch.equal(pos[:, 0], state["pos_embed"][:, 0])  # the class token's embedding is kept as it is
    # a rebuilt model of the same size takes the checkpoint strictly (what evaluate/predict do)
    again = build_model(cfg, num_classes=3, in_chans=4, img_size=64)
    again.load_state_dict(model.state_dict())
    # models of any input size are left alone
    cnn = build_model(ModelConfig(backbone="test_resnet"), num_classes=3, in_chans=3, img_size=48)
    assert cnn(torch.rand(1, 3, 48, 48)).shape == (1, 3)
