"""The synthetic dataset on disk: layout, CSV syntax, weak labels, determinism, label statistics, CLI."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from locbench.cli import main
from locbench.data.schemes import get_scheme
from locbench.data.synth import (
    assign_cell_labels,
    compute_label_stats,
    load_label_stats,
    make_field,
    sample_image_labels,
    synthesize,
)
from locbench.errors import LocbenchError

SMALL = dict(images=6, size=96, cells_per_field=(2, 4))
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _csv(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def ds2021(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("s21") / "data", edition="2021", seed=1, **SMALL)


def test_layout_2021(ds2021):
    rows = _csv(ds2021 / "train.csv")
    assert rows[0] == ["ID", "Label"]
    assert len(rows) == 1 + SMALL["images"]
    ids = [r[0] for r in rows[1:]]
    assert len(set(ids)) == len(ids) and all(UUID.match(i) for i in ids)
    for fid, label in rows[1:]:
        ks = [int(v) for v in label.split("|")]
        assert all(0 <= k < 19 for k in ks)
        for color in ("red", "green", "blue", "yellow"):
            im = Image.open(ds2021 / "train" / f"{fid}_{color}.png")
            assert im.mode == "L" and im.size == (96, 96)
        mask = np.asarray(Image.open(ds2021 / "masks" / f"{fid}.png"))
        assert mask.shape == (96, 96) and mask.dtype == np.uint8
    assert not (ds2021 / ".synth-partial").exists()
    info = json.loads((ds2021 / "synth.json").read_text())
    assert info["format"] == "2021" and info["images"] == 6 and info["seed"] == 1 and info["cells_per_field"] == [2, 4]


def test_weak_labels_are_consistent(ds2021):
    images = {fid: set(label.split("|")) for fid, label in _csv(ds2021 / "train.csv")[1:]}
    cells: dict[str, dict[int, set[str]]] = {}
    for fid, cell, label in _csv(ds2021 / "cells.csv")[1:]:
        assert label, f"{fid} cell {cell} has no label"
        cells.setdefault(fid, {})[int(cell)] = set(label.split("|"))
    assert set(cells) == set(images)
    for fid, labels in images.items():
        mask = np.asarray(Image.open(ds2021 / "masks" / f"{fid}.png"))
        assert set(cells[fid]) == set(np.unique(mask[mask > 0]).tolist())  # cell ids are the mask ids
        assert set().union(*cells[fid].values()) == labels  # the image label is the union over its cells
        assert all(c <= labels for c in cells[fid].values())
        if "18" in labels:
            assert labels == {"18"}  # Negative is exclusive


def test_not_every_cell_carries_every_label():
    scheme = get_scheme("hpa2021")
    rng = np.random.default_rng(0)
    partial = 0
    for _ in range(50):
        cells = assign_cell_labels(rng, (0, 13, 16), 8, scheme)
        assert all(cells) and set().union(*cells) == {0, 13, 16}
        partial += any(set(c) != {0, 13, 16} for c in cells)
    assert partial > 40


def test_mitotic_labels_go_to_few_dividing_cells():
    scheme = get_scheme("hpa2021")
    f = make_field(3, 0, scheme=scheme, labels=(0, scheme.index("Mitotic spindle")), size=160, cells_per_field=(5, 6))
    spindle = [i for i, cl in enumerate(f.cell_labels) if scheme.index("Mitotic spindle") in cl]
    assert 1 <= len(spindle) <= 2
    assert all(f.stages[i] == "metaphase" for i in spindle)


def test_format_2018_syntax(tmp_path):
    out = synthesize(tmp_path / "d18", edition="2018", seed=2, **SMALL)
    rows = _csv(out / "train.csv")
    assert rows[0] == ["Id", "Target"]
    for _, target in rows[1:]:
        assert "|" not in target and all(0 <= int(v) < 28 for v in target.split(" "))
    cells = _csv(out / "cells.csv")
    assert cells[0] == ["ID", "cell", "Label"]
    assert all(set(c[2].split(" ")) <= set(dict(rows[1:])[c[0]].split(" ")) for c in cells[1:])


def test_same_seed_same_bytes_any_workers(tmp_path):
    a = synthesize(tmp_path / "a", seed=5, **SMALL)
    b = synthesize(tmp_path / "b", seed=5, **SMALL)
    c = synthesize(tmp_path / "c", seed=6, **SMALL)
    assert _hashes(a) == _hashes(b)
    assert _hashes(a) != _hashes(c)
    d = synthesize(tmp_path / "d", seed=5, workers=2, **SMALL)
    assert _hashes(a) == _hashes(d)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = synthesize(tmp_path / "x", images=1, size=64, cells_per_field=(1, 2))
    with pytest.raises(LocbenchError, match="not empty"):
        synthesize(out, images=1, size=64, cells_per_field=(1, 2))
    synthesize(out, images=2, size=64, cells_per_field=(1, 2), overwrite=True)
    assert len(_csv(out / "train.csv")) == 3


@pytest.mark.parametrize(
    "bad",
    [dict(images=0), dict(size=32), dict(edition="2020"), dict(cells_per_field=(3, 2)), dict(cells_per_field=(1, 500))],
)
def test_bad_parameters_are_user_errors(tmp_path, bad):
    with pytest.raises(LocbenchError):
        synthesize(tmp_path / "y", **{**dict(images=1, size=64, cells_per_field=(1, 2)), **bad})


@pytest.mark.parametrize("edition", ["2021", "2018"])
def test_label_sampling_follows_the_real_statistics(edition):
    stats = load_label_stats(edition)
    scheme = get_scheme(stats["scheme"])
    rng = np.random.default_rng(0)
    n = 3000
    counts = np.zeros(scheme.num_classes)
    both = 0
    for _ in range(n):
        labels = sample_image_labels(rng, stats)
        cells = assign_cell_labels(rng, labels, int(rng.integers(2, 8)), scheme)
        union = set().union(*cells)
        assert union == set(labels)
        counts[list(union)] += 1
        both += {0, scheme.index("Cytosol")} <= union
    freq = counts / n
    assert int(np.argmax(freq)) == scheme.index("Nucleoplasm")
    np.testing.assert_allclose(freq, stats["frequency"], atol=0.03)
    co = np.array(stats["cooccurrence"])[0, scheme.index("Cytosol")] / stats["images"]
    assert abs(both / n - co) < 0.03


def test_stored_stats_are_self_consistent():
    for edition, n_classes in (("2021", 19), ("2018", 28)):
        s = load_label_stats(edition)
        assert len(s["classes"]) == len(s["frequency"]) == n_classes
        assert sum(c for _, c in s["combinations"]) == s["images"]
        co = np.array(s["cooccurrence"])
        np.testing.assert_allclose(np.diag(co) / s["images"], s["frequency"], atol=1e-5)
        assert (co == co.T).all()
    neg = get_scheme("hpa2021").index("Negative")
    assert all(combo == [neg] for combo, _ in load_label_stats("2021")["combinations"] if neg in combo)


def test_stored_stats_match_the_real_label_files(real_data):
    labels = real_data / "labels"
    for edition in ("2021", "2018"):
        fresh = compute_label_stats(labels / f"kaggle{edition}_train_full.csv", edition=edition)
        stored = load_label_stats(edition)
        assert fresh["combinations"] == stored["combinations"]
        assert fresh["frequency"] == stored["frequency"]


def test_cli_writes_dataset_and_preview(tmp_path):
    out = tmp_path / "cli"
    argv = [
        "synth",
        str(out),
        "--images",
        "3",
        "--size",
        "96",
        "--cells",
        "2-3",
        "--format",
        "2018",
        "--seed",
        "4",
        "--noise",
        "0.05",
        "--intensity-spread",
        "0.2",
        "--preview",
        "2",
    ]
    assert main(argv) == 0
    assert (out / "preview.png").stat().st_size > 1000
    assert _csv(out / "train.csv")[0] == ["Id", "Target"]
    info = json.loads((out / "synth.json").read_text())
    assert (info["seed"], info["noise"], info["intensity_spread"], info["cells_per_field"]) == (4, 0.05, 0.2, [2, 3])
    assert main(argv) == 2  # not empty, no --overwrite: a user error


def test_cli_rejects_bad_cells(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["synth", str(tmp_path / "z"), "--cells", "5-2"])
    assert e.value.code == 2


def test_fields_are_quick_to_draw():
    # Sanity only (the budget is 200 fields of 256 px well under a minute on one core): ~0.1 s a field.
    scheme, stats = get_scheme("hpa2021"), load_label_stats("2021")
    t = time.perf_counter()
    for i in range(5):
        make_field(0, i, scheme=scheme, stats=stats, size=256)
    assert time.perf_counter() - t < 10
