"""Splits: stratification quality, reproducibility, test part, k-fold, groups, save/load validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from locbench.data.formats import Table
from locbench.data.schemes import get_scheme
from locbench.data.splits import load_split, make_split, save_split, split_summary
from locbench.errors import BadInputError, LocbenchError


def _table(n: int = 800, seed: int = 0, groups: bool = False) -> Table:
    """A table with skewed multi-label targets (a few common classes, many rare ones), no images needed."""
    rng = np.random.default_rng(seed)
    scheme = get_scheme("hpa2021")
    p = np.linspace(0.35, 0.03, scheme.num_classes)
    targets = (rng.random((n, scheme.num_classes)) < p).astype(np.uint8)
    targets[targets.sum(1) == 0, 0] = 1
    g = np.array([f"HPA{k // 4:04d}" for k in range(n)], dtype=object) if groups else None
    return Table(
        root=Path("."),
        format="kaggle2021",
        scheme=scheme,
        ids=[f"id{k:04d}" for k in range(n)],
        targets=targets,
        groups=g,
        group_col="antibody" if groups else None,
    )


def _fractions(table: Table, split, part: str) -> np.ndarray:
    idx = split.indices(table, part)
    return table.targets[idx].sum(0) / table.targets.sum(0)


def test_per_class_proportions_are_close_to_the_fraction():
    table = _table()
    split = make_split(table, seed=3, val_frac=0.25)
    assert set(split.parts) == {"train", "val"}
    assert len(split.parts["val"]) == pytest.approx(200, rel=0.15)
    val = _fractions(table, split, "val")
    assert np.abs(val - 0.25).max() < 0.03  # every class, rare ones included
    # a plain random split of the same size is visibly worse on the rare classes
    rng = np.random.default_rng(3)
    rand_idx = rng.choice(len(table), size=len(split.parts["val"]), replace=False)
    rand = table.targets[rand_idx].sum(0) / table.targets.sum(0)
    assert np.abs(val - 0.25).max() < np.abs(rand - 0.25).max()


def test_same_seed_same_split_other_seed_other_split():
    table = _table()
    a, b, c = (make_split(table, seed=s, val_frac=0.2) for s in (7, 7, 8))
    assert a.parts == b.parts and a.parts["val"] != c.parts["val"]


def test_test_part_and_disjoint_cover():
    table = _table()
    split = make_split(table, seed=0, val_frac=0.2, test_frac=0.1)
    sizes = {k: len(v) for k, v in split.parts.items()}
    # iterative stratification trades a few fields of size for class balance
    assert sizes["test"] == pytest.approx(80, rel=0.15) and sizes["val"] == pytest.approx(160, rel=0.15)
    all_ids = [i for ids in split.parts.values() for i in ids]
    assert sorted(all_ids) == table.ids  # disjoint and complete
    assert np.abs(_fractions(table, split, "test") - 0.1).max() < 0.03


def test_kfold_folds_partition_the_rest():
    table = _table(300)
    vals = [make_split(table, seed=1, kfold=3, fold=f).parts["val"] for f in range(3)]
    assert sorted(sum(vals, [])) == table.ids
    assert all(not set(vals[i]) & set(vals[j]) for i in range(3) for j in range(i + 1, 3))
    split = make_split(table, seed=1, kfold=3, fold=0)
    assert split.method == "kfold" and split.fractions["val"] == pytest.approx(1 / 3)


def test_groups_stay_together():
    table = _table(groups=True)
    split = make_split(table, seed=0, val_frac=0.2, test_frac=0.1, group_col="antibody")
    group_of = dict(zip(table.ids, table.groups, strict=True))
    part_groups = {p: {group_of[i] for i in ids} for p, ids in split.parts.items()}
    assert not part_groups["train"] & part_groups["val"]
    assert not part_groups["train"] & part_groups["test"] and not part_groups["val"] & part_groups["test"]
    assert len(split.parts["val"]) == pytest.approx(160, rel=0.2)


def test_group_column_read_from_the_csv_when_not_loaded(tmp_path):
    csv = tmp_path / "train.csv"
    table = _table(200)
    csv.write_text("ID,Label,antibody\n" + "".join(f"{i},0,G{k % 40}\n" for k, i in enumerate(table.ids)))
    table.csv_path, table.id_col = csv, "ID"
    split = make_split(table, seed=0, val_frac=0.25, group_col="antibody")
    val_groups = {int(i[2:]) % 40 for i in split.parts["val"]}
    train_groups = {int(i[2:]) % 40 for i in split.parts["train"]}
    assert not val_groups & train_groups


def test_save_load_roundtrip_and_validation(tmp_path):
    table = _table(100)
    split = make_split(table, seed=5, val_frac=0.3)
    path = save_split(split, tmp_path / "split.json")
    loaded = load_split(path, table)
    assert loaded == split
    assert np.array_equal(loaded.indices(table, "val"), split.indices(table, "val"))
    summary = split_summary(loaded, table)
    assert summary["val"]["num_fields"] + summary["train"]["num_fields"] == 100
    with pytest.raises(BadInputError) as err:
        load_split(path, table.subset(range(50)))
    assert "not in the dataset" in str(err.value) and all(i in table.ids[50:] for i in err.value.items)


def test_bad_split_files_and_arguments(tmp_path):
    with pytest.raises(LocbenchError, match="not found"):
        load_split(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(LocbenchError, match="not a locbench split"):
        load_split(tmp_path / "x.json")
    table = _table(100)
    with pytest.raises(LocbenchError, match="val fraction"):
        make_split(table, seed=0, val_frac=0.7, test_frac=0.4)
    with pytest.raises(LocbenchError, match="--fold"):
        make_split(table, seed=0, kfold=5, fold=5)
    with pytest.raises(LocbenchError, match="cannot split 1 fields"):
        make_split(table.subset(range(1)), seed=0, val_frac=0.1)


def test_real_2018_split(real_data):
    from locbench.data.formats import load_table

    table = load_table(real_data / "kaggle2018")
    split = make_split(table, seed=0, val_frac=0.2)
    assert len(split.parts["val"]) == pytest.approx(20, abs=4)
    # Nucleoplasm (42 of 101) lands ~20% in val
    assert 6 <= table.targets[split.indices(table, "val"), 0].sum() <= 11
