"""Sweep files: grid expansion (product, exclude, overrides, seeds), stable run ids, clear mistakes."""

from __future__ import annotations

import pytest
import yaml

from locbench.errors import LocbenchError
from locbench.sweep.grid import config_hash, expand, load_sweep

BASE = {"config": {"model": {"backbone": "test_resnet"}, "train": {"epochs": 1}}}


def _spec(**kw) -> dict:
    return {**BASE, "grid": {"loss.name": ["bce", "focal"], "augment.name": ["standard", "cutmix"]}, **kw}


def test_cartesian_product_times_seeds():
    sweep = expand(_spec(seeds=[0, 1]), data="/data/hpa")
    assert len(sweep.points) == 2 * 2 * 2
    combos = {(c.axes["loss.name"], c.axes["augment.name"], c.seed) for c in sweep.points}
    assert combos == {(lo, au, s) for lo in ("bce", "focal") for au in ("standard", "cutmix") for s in (0, 1)}
    for c in sweep.points:
        assert c.config.loss.name == c.axes["loss.name"] and c.config.augment.name == c.axes["augment.name"]
        assert c.config.train.seed == c.seed == c.config.data.split_seed  # each seed draws its own split too
        assert c.config.data.path == "/data/hpa" and c.config.model.backbone == "test_resnet"
        assert c.point_id == f"{c.axes['loss.name']}-{c.axes['augment.name']}"
        assert c.run_id.startswith(f"{c.point_id}-s{c.seed}-") and len(c.run_id.rsplit("-", 1)[1]) == 6
    assert sweep.seeds == [0, 1] and sweep.name == "sweep"


def test_seed_count_and_seed_keys():
    sweep = expand(_spec(seeds=3, seed_keys=["train.seed"]))
    assert sorted({c.seed for c in sweep.points}) == [0, 1, 2]
    assert all(c.config.data.split_seed == 0 for c in sweep.points)  # only train.seed follows the seed


def test_exclude_drops_matching_points():
    sweep = expand(_spec(exclude=[{"loss.name": "focal", "augment.name": "cutmix"}]))
    assert sorted(c.point_id for c in sweep.points) == ["bce-cutmix", "bce-standard", "focal-standard"]
    partial = expand(_spec(exclude=[{"loss.name": "focal"}]))
    assert sorted(c.point_id for c in partial.points) == ["bce-cutmix", "bce-standard"]


def test_overrides_apply_where_they_match():
    rule = {"when": {"augment.name": "cutmix"}, "set": {"train.batch_size": 16, "augment.cutmix_p": 1.0}}
    sweep = expand(_spec(overrides=[rule]))
    for c in sweep.points:
        cut = c.axes["augment.name"] == "cutmix"
        assert c.config.train.batch_size == (16 if cut else 32)
        assert c.config.augment.cutmix_p == (1.0 if cut else 0.5)


def test_base_file_inline_config_and_extra_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 2.0e-3\ntrain:\n  epochs: 7\n")
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "mine", "base": "base.yaml", "config": {"train": {"epochs": 2}}, "grid": {"loss.name": ["bce"]}}
        )
    )
    sweep = load_sweep(path, data="/d", extra={"data.img_size": 64})
    (point,) = sweep.points
    assert sweep.name == "mine" and sweep.path == path
    assert (point.config.optim.lr, point.config.train.epochs, point.config.data.img_size) == (2e-3, 2, 64)


def test_run_ids_are_stable_and_follow_what_changes_the_result():
    a = [c.run_id for c in expand(_spec(seeds=[0, 1]), data="/one").points]
    b = [c.run_id for c in expand(_spec(seeds=[0, 1]), data="/one").points]
    assert a == b and len(set(a)) == len(a)
    # where the data lives, how many workers load it, which device: the numbers do not change, nor do the ids
    moved = expand(_spec(seeds=[0, 1]), data="/elsewhere", extra={"data.workers": 7, "train.device": "cpu"})
    assert [c.run_id for c in moved.points] == a
    # a key that changes the numbers changes every id
    lr = expand(_spec(seeds=[0, 1]), data="/one", extra={"optim.lr": 0.01})
    assert not set(c.run_id for c in lr.points) & set(a)
    assert config_hash(lr.points[0].config) != config_hash(expand(_spec()).points[0].config)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({**BASE, "grid": {}}, r"the grid is empty; give at least one axis"),
        ({**BASE}, r"the grid is empty"),
        ({**BASE, "grid": {"los.name": ["bce"]}}, r"'los.name' is not a config key; did you mean loss.name"),
        ({**BASE, "grid": {"loss.name": "bce"}}, r"grid axis 'loss.name' needs a non-empty list"),
        ({**BASE, "grid": {"loss.name": []}}, r"grid axis 'loss.name' needs a non-empty list"),
        ({**BASE, "grid": {"loss.name": ["bce", "bce"]}}, r"grid axis 'loss.name' lists a value twice"),
        ({**BASE, "grid": {"loss.name": ["bce", "dice"]}}, r"grid point \{'loss.name': 'dice'\}: unknown loss 'dice'"),
        ({**BASE, "grid": {"model.backbone": ["resnet5"]}}, r"unknown backbone 'resnet5'"),
        ({**BASE, "grid": {"loss.name": ["bce"]}, "seeds": []}, r"seeds must be a list of integers"),
        ({**BASE, "grid": {"loss.name": ["bce"]}, "seeds": ["a"]}, r"seeds must be a list of integers"),
        ({**BASE, "grid": {"loss.name": ["bce"]}, "sedes": [1]}, r"unknown sweep key\(s\) sedes; valid: "),
        ({**BASE, "grid": {"loss.name": ["bce"]}, "exclude": [{"augment.name": "x"}]}, r"not a grid axis"),
        ({**BASE, "grid": {"loss.name": ["bce"]}, "exclude": [{"loss.name": "bce"}]}, r"every point .* excluded"),
        ({**BASE, "grid": {"loss.name": ["bce"]}, "overrides": [{"when": {}}]}, r"each overrides entry is"),
        (
            {**BASE, "grid": {"loss.name": ["bce"]}, "overrides": [{"set": {"train.epoch": 2}}]},
            r"'train.epoch' is not a config key; did you mean train.epochs",
        ),
        ({**BASE, "grid": {"train.epochs": [0]}}, r"train.epochs must be at least 1"),
    ],
)
def test_mistakes_are_clear_errors(spec, pattern):
    with pytest.raises(LocbenchError, match=pattern):
        expand(spec, where="my.yaml")


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("grid:\n  augment.nmae: [standard]\n")
    with pytest.raises(LocbenchError, match=r"typo.yaml: grid: 'augment.nmae' is not a config key; did you mean"):
        load_sweep(path)


def test_overrides_and_seed_keys_may_not_overwrite_an_axis():
    # otherwise the grid point named "focal" would train with BCE, and the report would compare two BCE runs
    spec = {**BASE, "grid": {"loss.name": ["bce", "focal"]}, "overrides": [{"set": {"loss.name": "bce"}}]}
    with pytest.raises(LocbenchError, match=r"overrides set loss.name, which is a grid axis"):
        expand(spec)
    with pytest.raises(LocbenchError, match=r"seed_keys set train.seed, which is a grid axis"):
        expand({**BASE, "grid": {"train.seed": [0, 1]}})
    assert len(expand({**BASE, "grid": {"train.seed": [0, 1]}, "seed_keys": []}).points) == 2
