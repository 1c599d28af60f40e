"""`locbench list KIND` for every kind: the registries list themselves."""

from __future__ import annotations

import pytest

from locbench.cli import main
from locbench.commands.list import KINDS


def _list(capsys, *args: str) -> list[str]:
    assert main(["list", *args]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("losses", ["asl", "bce", "focal"]),
        ("augmentations", ["cutmix", "mixup", "none", "standard"]),
        ("mixers", ["cutmix", "mixup"]),
        ("heads", ["linear", "mlp"]),
    ],
)
def test_registry_kinds_list_names_with_descriptions(kind, names, capsys):
    lines = _list(capsys, kind)
    assert [line.split()[0] for line in lines] == names
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # every entry has a description


def test_segmenters_are_listed(capsys):
    from locbench.cells.segment import SEGMENTERS

    lines = _list(capsys, "segmenters")
    assert [line.split()[0] for line in lines] == SEGMENTERS.names() and lines


def test_backbones_without_pattern_shows_study_presets(capsys):
    out = "\n".join(_list(capsys, "backbones"))
    for name in ("nfnet_l0", "resnet50", "inception_v3", "efficientnet_b0", "efficientnet_b3", "efficientnet_b5"):
        assert f"  {name}" in out
    assert "eca_nfnet_l0" in out and "filter with a pattern" in out


def test_backbones_with_pattern_are_timm_names(capsys):
    import timm

    lines = _list(capsys, "backbones", "test_*")
    assert lines == timm.list_models("test_*")
    assert {"test_resnet", "test_efficientnet", "test_vit", "test_nfnet"} <= set(lines)


def test_backbone_pattern_without_match_exits_2(capsys):
    assert main(["list", "backbones", "no_such_model*"]) == 2
    assert "no timm model matches 'no_such_model*'" in capsys.readouterr().err


def test_configs_lists_shipped_yaml(capsys):
    lines = _list(capsys, "configs")
    assert any(line.endswith("configs/base.yaml") for line in lines)
    assert any(line.endswith("configs/sweeps/seed-study.yaml") for line in lines)


def test_every_kind_is_covered():
    assert set(KINDS) == {"backbones", "losses", "augmentations", "mixers", "heads", "segmenters", "configs"}
