"""Transformers in the registry: ViT/DINO/ConvNeXt presets, 4-stain input at any image size, and weights from a
local file (timm layout, plain or nested and prefixed state dicts, safetensors) with a report of what loaded.
Every model is one of timm's tiny ``test_*`` models with random weights."""

from __future__ import annotations

import argparse
import json
import logging

import pytest
import timm
import torch
import yaml
from fixtures.cli import run_cli
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from locbench.config import ModelConfig, load_config
from locbench.errors import LocbenchError
from locbench.models import PRESETS, build_model, check_backbone
from locbench.models.weights import import_weights, read_weights, strip_prefix

pytest_plugins = ["fixtures.synth_data"]


def vit_state(seed: int, **kwargs) -> dict[str, torch.Tensor]:
    """A test_vit state dict as a checkpoint would hold it (160 px: a 10 × 10 patch grid; 3 stains unless told)."""
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in timm.create_model("test_vit", num_classes=0, **kwargs).state_dict().items()}


def dino_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """A DINO training checkpoint around ``state``, with the entries DINO's training script saves: teacher and
    student (DDP) backbones with their projection heads, the optimiser's and loss's state, the epoch, the training
    arguments (an argparse.Namespace) and the fp16 scaler's state."""
    head = {"head.mlp.0.weight": torch.rand(8, 64), "head.last_layer.weight_g": torch.rand(16, 1)}
    return {
        "student": {**{f"module.backbone.{k}": v + 1 for k, v in state.items()}, **head},
        "teacher": {**{f"backbone.{k}": v for k, v in state.items()}, **head},
        "optimizer": {"state": {0: {"exp_avg": torch.rand(3)}}, "param_groups": [{"lr": 5e-4, "params": [0]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, lr=0.0005),
        "dino_loss": {"center": torch.zeros(1, 16)},
        "fp16_scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 3},
    }


def test_presets_resolve_to_timm_models_and_work_as_sweep_values(tmp_path):
    assert {"vit_small", "dino_vit_small", "dinov2_small", "convnext_tiny"} <= set(PRESETS)
    for name, preset in PRESETS.items():
        assert check_backbone(name) == preset.timm_name and timm.is_model(preset.timm_name)
    assert load_config(None, {"model.backbone": "dinov2_small"}).model.timm_name == "vit_small_patch14_dinov2.lvd142m"
    from locbench.sweep.grid import load_sweep

    spec = {
        "name": "tf",
        "config": {"data": {"img_size": 32}},
        "grid": {"model.backbone": ["vit_tiny", "dino_vit_small", "convnext_atto"]},
        "seeds": [0],
    }
    (tmp_path / "tf.yaml").write_text(yaml.safe_dump(spec))
    sweep = load_sweep(tmp_path / "tf.yaml", data=str(tmp_path))
    names = sorted(p.config.model.timm_name for p in sweep.points)
    assert names == ["convnext_atto", "vit_small_patch16_224.dino", "vit_tiny_patch16_224"]
    with pytest.raises(LocbenchError, match="unknown backbone 'dinov2_smal'.*Close matches: dinov2_small"):
        check_backbone("dinov2_smal")


@pytest.mark.parametrize("backbone", ["test_vit", "test_vit2", "test_convnext"])
def test_four_stain_forward_at_two_image_sizes(backbone, one_thread):
    cfg = ModelConfig(backbone=backbone, hidden=16)
    for size in (32, 48):
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=5, in_chans=4, img_size=size)
        out = model(torch.rand(2, 4, size, size))
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        out.sum().backward()
        first = next(p for p in model.backbone.parameters() if p.ndim == 4)
        assert first.shape[1] == 4 and first.grad is not None
        if backbone.startswith("test_vit"):  # built for the size: a (size/16)² patch grid, no per-forward resampling
            grid = size // 16
            assert model.backbone.patch_embed.grid_size == (grid, grid)
            assert model.backbone.pos_embed.shape[1] == grid * grid + model.backbone.num_prefix_tokens * (
                not model.backbone.no_embed_class
            )


def save(state_or_ckpt: dict, path) -> str:
    if path.suffix == ".safetensors":
        save_file(state_or_ckpt, str(path))
    else:
        torch.save(state_or_ckpt, path)
    return str(path)


@pytest.mark.parametrize("layout", ["plain.pth", "dino.pth", "prefixed.safetensors"])
def test_vit_weights_from_a_file_load_into_another_size_and_stain_count(layout, tmp_path, one_thread):
    src = vit_state(7)
    if layout == "plain.pth":
        path = save(src, tmp_path / layout)
    elif layout == "dino.pth":
        path = save(dino_checkpoint(src), tmp_path / layout)
    else:
        path = save({f"module.backbone.{k}": v for k, v in src.items()}, tmp_path / layout)
    cfg = ModelConfig(backbone="test_vit", pretrained=True, pretrained_file=path, hidden=16)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=3, in_chans=4, img_size=48)
    got = model.backbone.state_dict()
    # every tensor comes from the file (the teacher's, not the student's, in a DINO checkpoint)
    for key in ("cls_token", "blocks.0.attn.qkv.weight", "blocks.5.mlp.fc2.bias", "norm.weight"):
        assert torch.equal(got[key], src[key]), key
    # the patch embedding is adapted to 4 stains (R,G,B,R scaled by 3/4), the position embeddings resampled once,
    # from the file's 10 × 10 grid straight to the 3 × 3 grid of 48 px
    torch.testing.assert_close(got["patch_embed.proj.weight"], src["patch_embed.proj.weight"][:, [0, 1, 2, 0]] * 0.75)
    want = resample_abs_pos_embed(src["pos_embed"], new_size=[3, 3], num_prefix_tokens=1)
    torch.testing.assert_close(got["pos_embed"], want)
    assert model(torch.rand(2, 4, 48, 48)).shape == (2, 3)
    report = model.weights
    assert report.loaded == report.total == len(got) and report.missing == ()
    assert sorted(a.split()[0] for a in report.adapted) == ["patch_embed.proj.weight", "pos_embed"]
    if layout == "dino.pth":
        assert report.entry == "teacher" and report.prefix == "backbone."
        assert report.unexpected == ("head.mlp.0.weight", "head.last_layer.weight_g")
    else:
        assert report.entry is None and report.unexpected == ()
        # timm's reader drops DDP's "module." itself; the rest of the wrapper prefix is removed here
        assert report.prefix == ("backbone." if layout.startswith("prefixed") else "")


def test_four_stain_checkpoint_loads_unchanged_into_four_stains_and_adapted_into_three(tmp_path, one_thread):
    # a model trained on the four HPA stains (what a published HPA ViT is): its first layer has 4 input channels
    src = vit_state(3, in_chans=4)
    path = save(src, tmp_path / "hpa_vit.pth")
    cfg = ModelConfig(backbone="test_vit", pretrained=True, pretrained_file=path, hidden=16)
    four = build_model(cfg, num_classes=3, in_chans=4, img_size=32)
    assert torch.equal(four.backbone.patch_embed.proj.weight, src["patch_embed.proj.weight"])
    assert [a.split()[0] for a in four.weights.adapted] == ["pos_embed"]
    three = build_model(cfg, num_classes=3, in_chans=3, img_size=32)
    assert three.backbone.patch_embed.proj.weight.shape[1] == 3
    assert "patch_embed.proj.weight (64, 4, 16, 16) -> (64, 3, 16, 16)" in three.weights.adapted


def test_missing_and_unexpected_tensors_are_reported_in_the_log(tmp_path, caplog, one_thread):
    src = vit_state(5)
    scratch_norm = vit_state(0)["norm.weight"]
    partial = {k: v for k, v in src.items() if not k.startswith("norm.")}
    partial["mask_token"] = torch.zeros(1, 64)
    path = save(partial, tmp_path / "partial.safetensors")
    cfg = ModelConfig(backbone="test_vit", pretrained=True, pretrained_file=path, hidden=16)
    with caplog.at_level(logging.INFO, logger="locbench.models.weights"):
        model = build_model(cfg, num_classes=3, in_chans=3, img_size=32)
    report = model.weights
    assert report.missing == ("norm.weight", "norm.bias") and report.unexpected == ("mask_token",)
    assert report.loaded == report.total - 2
    assert torch.equal(model.backbone.norm.weight, scratch_norm)  # left at its init (ones)
    text = caplog.text
    assert f"{path}: {report.total - 2} of {report.total} backbone tensors loaded" in text
    assert "2 missing, left at random init: norm.weight, norm.bias" in text
    assert "1 unexpected, ignored: mask_token" in text
    assert "lacks 2 of" in text and "WARNING" in text
    assert json.loads(json.dumps(report.to_dict()))["missing"] == ["norm.weight", "norm.bias"]


def test_a_file_of_another_model_is_refused_naming_its_keys(tmp_path, one_thread):
    torch.manual_seed(0)
    other = save(timm.create_model("test_convnext").state_dict(), tmp_path / "convnext.pth")
    cfg = ModelConfig(backbone="test_vit", pretrained=True, pretrained_file=other)
    with pytest.raises(LocbenchError) as e:
        build_model(cfg, num_classes=3, in_chans=4, img_size=32)
    msg = str(e.value)
    assert msg.startswith(f"model.pretrained_file {other} does not hold test_vit weights:")
    assert "file keys: stem.0.weight, stem.0.bias, stem.1.weight" in msg and "the model's: cls_token, pos_embed" in msg
    empty = save({"epoch": 3, "args": argparse.Namespace(lr=1.0)}, tmp_path / "no_tensors.pth")
    with pytest.raises(LocbenchError, match=r"no_tensors.pth holds no tensors .*top-level keys: epoch, args"):
        read_weights(tmp_path / "no_tensors.pth")
    assert empty


def test_prefix_is_removed_only_where_it_matches_better():
    own = {"a.weight", "b.weight"}
    state = {"backbone.a.weight": 1, "backbone.b.weight": 2, "head.x": 3}
    assert strip_prefix(state, own) == ("backbone.", {"a.weight": 1, "b.weight": 2}, ["head.x"])
    assert strip_prefix({"a.weight": 1, "b.weight": 2}, own)[0] == ""


def test_import_takes_a_dino_checkpoint_and_stores_the_backbone(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("LOCBENCH_WEIGHTS", str(tmp_path / "weights"))
    src = vit_state(9, in_chans=4)
    path = save(dino_checkpoint(src), tmp_path / "dino_full.pth")
    dest, report = import_weights(path, "test_vit")
    assert report.entry == "teacher" and report.prefix == "backbone." and report.missing == ()
    stored, entry = read_weights(dest)
    assert entry is None and set(stored) == set(src) and torch.equal(stored["pos_embed"], src["pos_embed"])
    meta = json.loads(dest.with_suffix(".json").read_text())
    assert meta["prefix_removed"] == "backbone." and meta["in_chans"] == 4
    model = build_model(ModelConfig(backbone="test_vit", pretrained=True), num_classes=3, in_chans=4, img_size=32)
    assert torch.equal(model.backbone.patch_embed.proj.weight, src["patch_embed.proj.weight"])


def test_bad_weights_files_exit_2_from_the_cli(kit, tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    code, err = run_cli(capsys, ["weights", "import", str(junk), "--backbone", "test_vit"])
    assert code == 2 and "junk.pth could not be read as a state dict" in err
    torch.manual_seed(0)
    other = save(timm.create_model("test_convnext").state_dict(), tmp_path / "convnext.safetensors")
    out = tmp_path / "run"
    over = kit.overrides(model__backbone="test_vit", model__pretrained=True, model__pretrained_file=other)
    code, err = run_cli(capsys, ["train", "--out", str(out), *kit.set_args(over)])
    assert code == 2 and "convnext.safetensors does not hold test_vit weights" in err
    assert (out / "status").read_text() == "failed\n" and "does not hold test_vit" in (out / "status.json").read_text()


def test_train_a_tiny_vit_from_a_dino_checkpoint_end_to_end(synth_2018_dir, kit, tmp_path, capsys):
    src = vit_state(11)
    path = save(dino_checkpoint(src), tmp_path / "dino.pth")
    out = tmp_path / "run"
    over = kit.overrides(
        data=synth_2018_dir, model__backbone="test_vit", model__pretrained=True, model__pretrained_file=path
    )
    code, err = run_cli(capsys, ["train", "--out", str(out), *kit.set_args(over)])
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    weights = summary["pretrained_weights"]
    assert weights["file"] == path and weights["entry"] == "teacher" and weights["prefix"] == "backbone."
    assert weights["loaded"] == weights["total"] and weights["missing"] == []
    assert weights["unexpected"] == ["head.mlp.0.weight", "head.last_layer.weight_g"]
    assert any(a.startswith("pos_embed (1, 101, 64) -> (1, 5, 64)") for a in weights["adapted"])
    assert summary["test"]["map"] is not None
    assert (
        f"pretrained weights from {path} (entry 'teacher', key prefix 'backbone.' removed)"
        in (out / "train.log").read_text()
    )
    code, err = run_cli(capsys, ["evaluate", str(out)])
    assert code == 0, err


def test_an_image_size_off_the_patch_grid_is_refused_or_warned_about(caplog, one_thread):
    # test_vit takes any input size (dynamic_img_size) but only whole patches: refused before training starts
    with pytest.raises(
        LocbenchError, match=r"data.img_size 40 is not a multiple of test_vit's patch size 16: use 32 or 48"
    ):
        build_model(ModelConfig(backbone="test_vit"), num_classes=3, in_chans=4, img_size=40)
    # a ViT built for one size floors its patch grid: it runs, the last 8 px unseen, and says so
    with caplog.at_level(logging.WARNING, logger="locbench.models.factory"):
        model = build_model(
            ModelConfig(backbone="vit_tiny_patch16_224", hidden=8), num_classes=3, in_chans=4, img_size=40
        )
    assert model(torch.rand(1, 4, 40, 40)).shape == (1, 3)
    assert "the last 8 px of each image are not seen; use 32 or 48" in caplog.text


def test_cli_lists_the_presets_and_import_prints_the_report(tmp_path, monkeypatch, capsys, one_thread):
    from locbench.cli import main

    capsys.readouterr()
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    assert "Transformer and ConvNeXt presets:" in out
    assert "dinov2_small      timm vit_small_patch14_dinov2.lvd142m; DINOv2 ViT-S/14" in out
    monkeypatch.setenv("LOCBENCH_WEIGHTS", str(tmp_path / "weights"))
    path = save(dino_checkpoint(vit_state(1)), tmp_path / "dino.pth")
    assert main(["weights", "import", path, "--backbone", "test_vit"]) == 0
    out = capsys.readouterr().out
    assert f"{path} (entry 'teacher', key prefix 'backbone.' removed): 78 of 78 backbone tensors loaded" in out
    assert "2 unexpected, ignored: head.mlp.0.weight, head.last_layer.weight_g" in out


def test_dinov2_layout_with_registers_is_converted_by_timms_filter(tmp_path, one_thread):
    # DINOv2's own layout (what its repository saves, and Cell-DINO's): register_tokens, a mask_token, and the
    # class token's position in pos_embed; timm's DINOv2 filter converts it. A tiny ViT of the dinov2_small_reg
    # preset's family, with random weights.
    tiny = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 28}
    torch.manual_seed(4)
    timm_state = timm.create_model("vit_small_patch14_reg4_dinov2", num_classes=0, **tiny).state_dict()
    original = {k: v for k, v in timm_state.items() if k not in ("reg_token", "pos_embed")}
    original["register_tokens"] = timm_state["reg_token"]
    original["pos_embed"] = torch.cat([torch.zeros(1, 1, 32), timm_state["pos_embed"]], dim=1)
    original["mask_token"] = torch.zeros(1, 32)
    path = save(original, tmp_path / "dinov2_reg.pth")
    torch.manual_seed(0)
    backbone = timm.create_model("vit_small_patch14_reg4_dinov2", num_classes=0, **tiny)
    from locbench.models.weights import load_weights

    report = load_weights(backbone, tmp_path / "dinov2_reg.pth", name="vit_small_patch14_reg4_dinov2", in_chans=3)
    got = backbone.state_dict()
    assert all(torch.equal(got[k], timm_state[k]) for k in timm_state), "every tensor as timm's own"
    assert report.missing == () and report.converted == ("reg_token",)
    assert set(report.unexpected) == {"register_tokens", "mask_token"}
    assert "made by timm's checkpoint filter from other keys: reg_token" in report.describe()
    assert "2 unexpected, ignored or converted: " in report.describe()
    assert path
