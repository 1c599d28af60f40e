"""Pretrained weights offline: `locbench weights import|list`, lookups in locbench's folder and the hub cache, a
fast clear failure when offline, and a sweep that checks every backbone's weights before anything starts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
import yaml
from fixtures.cli import run_cli
from safetensors.torch import save_file

from locbench.config import ModelConfig
from locbench.errors import LocbenchError
from locbench.models import build_model
from locbench.models.weights import find_weights, import_weights

pytest_plugins = ["fixtures.synth_data"]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network, empty hub caches, an empty locbench weights folder: an offline cluster node."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("LOCBENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def random_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in timm.create_model(name).state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_imported_weights_load_offline_exactly(offline, suffix, one_thread):
    state = random_state("test_resnet", 123)
    src = offline / f"mine{suffix}"
    torch.save(state, src) if suffix == ".pth" else save_file(state, str(src))
    dest, _ = import_weights(src, "test_resnet")
    assert dest == offline / "weights" / "test_resnet.safetensors" and dest.is_file()
    lookup = find_weights("test_resnet")
    assert lookup.found == dest and lookup.source == "imported"
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="test_resnet", pretrained=True), num_classes=5, in_chans=3)
    got = model.backbone.state_dict()
    for key, value in got.items():
        if not key.startswith("fc."):
            assert torch.equal(value, state[key]), key
    # a second import for the same backbone needs --force
    with pytest.raises(LocbenchError, match="exists .*--force"):
        import_weights(src, "test_resnet")
    import_weights(src, "test_resnet", force=True)


def test_import_refuses_a_file_that_does_not_fit(offline, one_thread):
    other = offline / "other.safetensors"
    save_file(random_state("test_efficientnet", 0), str(other))
    with pytest.raises(LocbenchError, match=r"does not fit timm's 'test_resnet': \d+ of \d+ tensors missing"):
        import_weights(other, "test_resnet")
    wide = offline / "wide.safetensors"
    save_file(timm.create_model("test_resnet", stem_width=8).state_dict(), str(wide))
    with pytest.raises(LocbenchError, match=r"of another shape \(conv1.0.weight \(8, 3, 3, 3\) \(model \(16, 3"):
        import_weights(wide, "test_resnet")
    assert not (offline / "weights" / "test_resnet.safetensors").exists()
    (offline / "x.txt").write_text("x")
    with pytest.raises(LocbenchError, match="expected one of .safetensors"):
        import_weights(offline / "x.txt", "test_resnet")


def test_offline_without_weights_fails_fast_naming_where_to_put_them(offline, one_thread):
    t0 = time.perf_counter()
    with pytest.raises(LocbenchError) as e:
        build_model(ModelConfig(backbone="test_resnet", pretrained=True), num_classes=3, in_chans=4)
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "test_resnet (timm test_resnet.r160_in1k): not in " in msg
    assert str(offline / "weights" / "test_resnet.safetensors") in msg
    assert "models--timm--test_resnet.r160_in1k/snapshots/*/model.safetensors" in msg
    assert "https://huggingface.co/timm/test_resnet.r160_in1k/resolve/main/model.safetensors" in msg
    assert "`locbench weights import FILE --backbone test_resnet`" in msg


def test_unreachable_hub_is_detected_in_seconds(offline, monkeypatch, one_thread):
    # HF_HUB_OFFLINE unset but no route to the hub: the probe fails (here at once) instead of timm retrying
    import huggingface_hub
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    asked = []

    class NoNetwork:
        def head(self, url, timeout):
            asked.append((url, timeout))
            raise OSError("Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "get_session", lambda: NoNetwork())
    with pytest.raises(LocbenchError, match="cannot be reached"):
        build_model(ModelConfig(backbone="test_resnet", pretrained=True), num_classes=3, in_chans=3)
    assert asked == [("https://huggingface.co/", 4.0)]


def test_weights_in_the_hub_cache_are_used_without_network(offline, one_thread):
    # the layout huggingface_hub writes: refs/main holds the commit, snapshots/<commit>/<file>
    repo = offline / "hf" / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    state = random_state("test_resnet", 7)
    save_file(state, str(snap / "model.safetensors"))
    lookup = find_weights("test_resnet")
    assert lookup.source == "hf-cache" and lookup.found == snap / "model.safetensors"
    model = build_model(ModelConfig(backbone="test_resnet", pretrained=True), num_classes=3, in_chans=3)
    assert torch.equal(model.backbone.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])


def test_a_model_without_weights_in_timm_says_so(offline):
    with pytest.raises(LocbenchError, match="timm has no pretrained weights for 'nfnet_f1'"):
        build_model(ModelConfig(backbone="nfnet_f1", pretrained=True), num_classes=3, in_chans=3)


def test_weights_cli_import_and_list(offline, capsys, one_thread):
    src = offline / "w.pth"
    torch.save(random_state("test_resnet", 1), src)
    code, _ = run_cli(capsys, ["weights", "import", str(src), "--backbone", "test_resnet"])
    assert code == 0
    main_out = _list(capsys, ["test_resnet", "test_efficientnet"])
    rows = {line.split()[0]: line for line in main_out.splitlines() if line.startswith("test_")}
    assert "imported" in rows["test_resnet"] and f"(from {src.resolve()})" in rows["test_resnet"]
    assert "missing" in rows["test_efficientnet"]
    assert "test_efficientnet: https://huggingface.co/timm/test_efficientnet" in main_out
    code, err = run_cli(capsys, ["weights", "import", str(offline / "nope.pth"), "--backbone", "test_resnet"])
    assert code == 2 and "nope.pth does not exist" in err


def _list(capsys, names: list[str]) -> str:
    from locbench.cli import main

    capsys.readouterr()
    assert main(["weights", "list", *names]) == 0
    return capsys.readouterr().out


def write_pretrained_sweep(path: Path, cache_dir: Path) -> Path:
    spec = {
        "name": "pre",
        "config": {
            "model": {"backbone": "test_resnet", "hidden": 32, "pretrained": True},
            "data": {"img_size": 32, "workers": 0, "cache_dir": str(cache_dir)},
            "train": {"epochs": 1, "batch_size": 8, "device": "cpu"},
        },
        "grid": {"model.backbone": ["test_resnet", "test_efficientnet", "test_vit"]},
        "seeds": [0],
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_sweep_lists_every_missing_weights_file_before_anything_starts(offline, kit, capsys, one_thread):
    src = offline / "w.safetensors"
    save_file(random_state("test_resnet", 2), str(src))
    import_weights(src, "test_resnet")
    sweep = write_pretrained_sweep(offline / "pre.yaml", kit.cache_dir)
    out = offline / "sweep-out"
    code, err = run_cli(capsys, ["sweep", str(sweep), "--data", str(kit.data), "--out", str(out)])
    assert code == 2
    assert "pretrained weights of 2 backbone(s) are not on this machine" in err
    assert "test_efficientnet (timm test_efficientnet" in err and "test_vit (timm test_vit" in err
    assert "--backbone test_efficientnet`" in err and "--backbone test_vit`" in err
    assert "test_resnet (timm" not in err
    assert not out.exists()


def test_sweep_preflight_passes_when_every_backbone_has_weights(offline, kit, one_thread):
    from locbench.sweep.grid import load_sweep
    from locbench.sweep.runner import check_pretrained_weights

    for i, name in enumerate(["test_resnet", "test_efficientnet", "test_vit"]):
        src = offline / f"{name}.safetensors"
        save_file(random_state(name, i), str(src))
        import_weights(src, name)
    sweep = load_sweep(write_pretrained_sweep(offline / "pre.yaml", kit.cache_dir), data=str(kit.data))
    check_pretrained_weights(sweep)  # no error


def test_train_offline_without_weights_stops_before_the_run_folder_exists(offline, kit, capsys, one_thread):
    out = offline / "run"
    args = ["train", "--out", str(out), "--pretrained", *kit.set_args(kit.overrides())]
    t0 = time.perf_counter()
    code, err = run_cli(capsys, args)
    assert code == 2 and time.perf_counter() - t0 < 10
    assert "model.pretrained for test_resnet: pretrained weights of 1 backbone(s) are not on this machine" in err
    assert "`locbench weights import FILE --backbone test_resnet`" in err
    assert not out.exists()
    # imported, the same command trains from them offline
    src = offline / "w.safetensors"
    save_file(random_state("test_resnet", 3), str(src))
    import_weights(src, "test_resnet")
    code, err = run_cli(capsys, args)
    assert code == 0, err
    assert "pretrained weights for test_resnet: " in (out / "train.log").read_text()


class NotATensor:
    """A pickled object: torch.load(weights_only=True) refuses it instead of running its code."""


def test_import_never_unpickles_objects(offline):
    src = offline / "evil.pth"
    torch.save({"conv1.0.weight": NotATensor()}, src)
    with pytest.raises(LocbenchError, match=r"evil.pth could not be read as a state dict .*weights_only=True blocked"):
        import_weights(src, "test_resnet")
    assert not (offline / "weights").exists()
