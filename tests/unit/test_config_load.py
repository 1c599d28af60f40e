"""Typed run configuration: shipped YAMLs compose, mistakes fail at load with the valid names, --set parsing."""

from __future__ import annotations

import itertools

import pytest
import yaml

from locbench.config import RunConfig, dump_config, from_dict, load_config, parse_set
from locbench.errors import LocbenchError
from locbench.sweep.files import CONFIG_DIR, shipped_configs
from locbench.sweep.grid import load_sweep

SWEEPS = sorted((CONFIG_DIR / "sweeps").glob("*.yaml"))
PRESETS = [p for p in shipped_configs() if p not in SWEEPS]


def test_shipped_files_are_found():
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in shipped_configs()}
    assert {"base.yaml", "sweeps/demo.yaml", "sweeps/seed-study.yaml"} <= names
    assert PRESETS and SWEEPS


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_run_preset_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_shipped_sweep_expands(path):
    sweep = load_sweep(path, data="/nowhere/hpa")
    spec = yaml.safe_load(path.read_text())
    keys, rules = list(spec["grid"]), spec.get("exclude") or []
    kept = [
        combo
        for combo in itertools.product(*spec["grid"].values())
        if not any(all(dict(zip(keys, combo, strict=True))[k] == v for k, v in rule.items()) for rule in rules)
    ]
    assert len(sweep.points) == len(kept) * len(sweep.seeds)
    assert all(c.config.data.path == "/nowhere/hpa" for c in sweep.points)
    assert len({c.run_id for c in sweep.points}) == len(sweep.points)


def test_seed_study_is_the_papers_grid():
    sweep = load_sweep(CONFIG_DIR / "sweeps" / "seed-study.yaml", data="/d")
    assert len(sweep.points) == 6 * 2 * 2 * 3
    nf = [c for c in sweep.points if c.axes["model.backbone"] == "nfnet_l0"]
    assert nf and all(c.config.optim.clip_mode == "agc" and c.config.model.timm_name == "eca_nfnet_l0" for c in nf)
    other = next(c for c in sweep.points if c.axes["model.backbone"] == "resnet50")
    assert other.config.optim.clip_mode == "auto"
    assert {c.config.train.seed for c in sweep.points} == {0, 1, 2}
    assert all(c.config.data.split_seed == c.config.train.seed for c in sweep.points)


def test_defaults_are_the_studys():
    cfg = RunConfig()
    assert (cfg.train.batch_size, cfg.train.epochs) == (32, 20)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.schedule) == ("adam", 1e-4, "constant")
    assert (cfg.data.img_size, cfg.data.channels) == (256, "green")
    assert (cfg.augment.name, cfg.augment.rotate, cfg.augment.translate, cfg.augment.flip) == (
        "standard",
        20.0,
        0.1,
        True,
    )
    assert cfg.loss.name == "bce"
    assert (cfg.model.head, cfg.model.hidden, cfg.model.backbone) == ("mlp", 512, "resnet50")
    assert cfg.model.pretrained is False
    assert load_config(CONFIG_DIR / "base.yaml") == cfg  # base.yaml spells the defaults out


def test_overrides_apply_and_ints_widen_to_floats():
    cfg = load_config(None, {"loss.name": "focal", "optim.lr": 1, "train.epochs": 3, "loss.class_weights": [1, 2]})
    assert cfg.loss.name == "focal" and cfg.train.epochs == 3
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.loss.class_weights == [1.0, 2.0]
    assert cfg.replace({"augment.name": "cutmix"}).augment.name == "cutmix"


def test_unknown_keys_fail_with_valid_names(tmp_path):
    with pytest.raises(LocbenchError, match=r"train.epoch.*valid: .*epochs"):
        load_config(None, {"train.epoch": 3})
    with pytest.raises(LocbenchError, match=r"'trian'.*valid: .*train"):
        load_config(None, {"trian.epochs": 3})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbon: resnet50\n")
    with pytest.raises(LocbenchError, match=r"bad.yaml.*model.backbon.*valid here: .*backbone"):
        load_config(bad)
    with pytest.raises(LocbenchError, match=r"unknown config key\(s\) colour in section 'data'; valid: .*channels"):
        from_dict({"data": {"colour": "green"}})


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("train.epochs", "ten", r"train.epochs: 'ten' is not of type int"),
        ("train.epochs", 2.5, r"train.epochs: 2.5 is not of type int"),
        ("train.batch_size", True, r"train.batch_size: True is not of type int"),
        ("augment.flip", "yes", r"augment.flip: 'yes' is not of type bool"),
        ("optim.lr", "fast", r"optim.lr: 'fast'"),
        ("loss.class_weights", {"a": 1}, r"loss.class_weights"),
        ("train.epochs", 0, r"train.epochs must be at least 1"),
        ("data.val_frac", 1.5, r"data.val_frac must be between 0 and 1"),
        ("optim.name", "rmsprop", r"optim.name must be adam, adamw or sgd"),
    ],
)
def test_wrong_types_and_values_fail_at_load(key, value, pattern):
    with pytest.raises(LocbenchError, match=pattern):
        load_config(None, {key: value})


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [
        ("loss.name", "dice", ["asl", "bce", "focal"]),
        ("augment.name", "randaug", ["cutmix", "mixup", "none", "standard"]),
        ("model.head", "attention", ["linear", "mlp"]),
    ],
)
def test_unknown_registry_names_list_the_valid_ones(key, value, names):
    with pytest.raises(LocbenchError) as e:
        load_config(None, {key: value})
    msg = str(e.value)
    assert repr(value) in msg and "valid names: " + ", ".join(names) in msg


def test_unknown_backbone_suggests_close_matches_and_presets():
    with pytest.raises(LocbenchError) as e:
        load_config(None, {"model.backbone": "resnet5O"})
    msg = str(e.value)
    assert "'resnet5O'" in msg and "resnet50" in msg.split("Close matches:")[1]
    assert "locbench list backbones" in msg and "efficientnet_b0" in msg
    assert load_config(None, {"model.backbone": "nfnet_l0"}).model.timm_name == "eca_nfnet_l0"


def test_class_weights_string_must_be_balanced():
    assert load_config(None, {"loss.class_weights": "balanced"}).loss.class_weights == "balanced"
    with pytest.raises(LocbenchError, match="'inverse'; use 'balanced' or a list"):
        load_config(None, {"loss.class_weights": "inverse"})


def test_yaml_mistakes_name_the_file(tmp_path):
    with pytest.raises(LocbenchError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [epochs: 3\n")
    with pytest.raises(LocbenchError, match=r"broken.yaml is not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- train\n")
    with pytest.raises(LocbenchError, match=r"list.yaml: the top level must be a mapping"):
        load_config(listing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == RunConfig()


def test_parse_set_reads_yaml_values():
    got = parse_set(["optim.lr=1.0e-3", "train.epochs=3", "loss.class_weights=[1, 2.5]", "data.split=null", "a.b=x=y"])
    assert got == {
        "optim.lr": 1e-3,
        "train.epochs": 3,
        "loss.class_weights": [1, 2.5],
        "data.split": None,
        "a.b": "x=y",
    }
    assert parse_set([" model.backbone = test_vit"]) == {"model.backbone": "test_vit"}
    with pytest.raises(LocbenchError, match=r"--set 'train.epochs': expected section.key=value"):
        parse_set(["train.epochs"])
    cfg = load_config(None, parse_set(["augment.flip=false", "optim.clip_grad=1"]))
    assert cfg.augment.flip is False and cfg.optim.clip_grad == 1.0


def test_exponent_floats_that_pyyaml_reads_as_strings_are_numbers(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-3 and 1.5e3 as strings; users (and YAML 1.2) mean numbers
    cfg = load_config(None, parse_set(["optim.lr=1e-3", "optim.clip_grad=1.5e3", "loss.class_weights=[1e0, 2]"]))
    assert (cfg.optim.lr, cfg.optim.clip_grad, cfg.loss.class_weights) == (1e-3, 1500.0, [1.0, 2.0])
    preset = tmp_path / "p.yaml"
    preset.write_text("optim:\n  lr: 3e-4\n")
    assert load_config(preset).optim.lr == 3e-4
    with pytest.raises(LocbenchError, match="optim.lr: '1e-3x' is not of type float"):
        load_config(None, {"optim.lr": "1e-3x"})
    with pytest.raises(LocbenchError, match="model.backbone: 1000.0 is not of type str|model.backbone"):
        load_config(None, {"model.backbone": 1e3})


def test_seed_study_starts_from_pretrained_backbones_as_the_study_did():
    sweep = load_sweep(CONFIG_DIR / "sweeps" / "seed-study.yaml", data="/d")
    assert all(c.config.model.pretrained and c.config.model.pretrained_file is None for c in sweep.points)
