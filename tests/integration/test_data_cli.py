"""The data commands end to end through ``locbench.cli.main``: info, cache, split, preview, bad input → exit 2."""

from __future__ import annotations

import json
import logging
import shutil

import cv2
import numpy as np
import pytest
from fixtures.data_factory import TINY_2018, write_dataset

from locbench.cli import main


@pytest.fixture
def tiny(tmp_path):
    return shutil.copytree(TINY_2018, tmp_path / "tiny")


def test_data_info_json_on_real_2018(real_data, capsys):
    assert main(["data", "info", str(real_data / "kaggle2018"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "kaggle2018" and info["num_fields"] == 101 and info["scheme"] == "hpa2018"
    assert info["class_counts"]["Nucleoplasm"] == 42
    assert info["sample"]["stains"]["red"] == {
        "file": f"{info['sample']['id']}_red.png",
        "height": 512,
        "width": 512,
        "dtype": "uint8",
    }


def test_data_info_text(tiny, capsys):
    assert main(["data", "info", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "kaggle2018" in out and "64x64 uint8" in out and "25 Cytosol" in out


def test_data_info_counts_cells_and_draws_outlines_of_synthetic_masks(tmp_path, capsys):
    from locbench.cells.segment import mask_path, read_mask
    from locbench.data.synth import synthesize

    data = synthesize(tmp_path / "data", images=6, size=64, cells_per_field=(2, 4), seed=5)
    ids = [line.split(",")[0] for line in (data / "train.csv").read_text().splitlines()[1:]]
    counts = [len(np.unique(read_mask(mask_path(data / "masks", i)))) - 1 for i in ids]
    assert main(["data", "info", str(data), "--json"]) == 0
    masks = json.loads(capsys.readouterr().out)["masks"]
    assert masks["with_mask"] == 6 and masks["missing"] == [] and masks["max"] == max(counts)
    assert list(masks["cells"].values()) == counts and "overlays" not in masks
    out = tmp_path / "outlines"
    assert main(["data", "info", str(data), "--overlay", str(out), "--overlay-fields", "2"]) == 0
    text = capsys.readouterr().out
    assert "6 of 6 fields have one" in text and f"2 pictures in {out}" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{i}.png" for i in ids[:2])
    # never into the dataset; --masks must be a folder
    assert main(["data", "info", str(data), "--overlay", str(data / "o")]) == 2
    assert main(["data", "info", str(data), "--masks", str(tmp_path / "none")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_cache_command_builds_then_reuses(real_data, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    args = [
        "cache",
        "--data",
        str(real_data / "kaggle2018"),
        "--img-size",
        "32",
        "--channels",
        "green",
        "--cache-dir",
        str(tmp_path / "c"),
        "--workers",
        "0",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "101 fields, stains green, 32px, uint8" in first
    assert main(args) == 0
    assert capsys.readouterr().out == first and "reusing cache" in caplog.text


def test_split_command_prints_sizes_and_class_counts(real_data, tmp_path, capsys):
    out = tmp_path / "split.json"
    args = [
        "split",
        "--data",
        str(real_data / "kaggle2018"),
        "--out",
        str(out),
        "--seed",
        "1",
        "--val-frac",
        "0.2",
        "--test-frac",
        "0.1",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    split = json.loads(out.read_text())
    assert split["seed"] == 1 and split["method"] == "stratified" and set(split["parts"]) == {"train", "val", "test"}
    fields_line = next(ln for ln in text.splitlines() if ln.startswith("fields"))
    assert [int(x) for x in fields_line.split()[1:]] == [len(split["parts"][p]) for p in ("train", "val", "test")]
    assert " 0 Nucleoplasm" in text
    assert main(args) == 0 and json.loads(out.read_text())["parts"] == split["parts"]  # reproducible


def test_kfold_split_command(tiny, tmp_path):
    args = ["split", "--data", str(tiny), "--out", str(tmp_path / "s.json"), "--kfold", "3", "--fold", "1"]
    assert main([*args, "--test-frac", "0"]) == 0  # 3 fields: no room for a test part
    assert json.loads((tmp_path / "s.json").read_text())["fold"] == 1


def _png_size(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.ndim == 3
    return img.shape


def test_preview_real_2021_by_ids(real_data, tmp_path):
    out = tmp_path / "p.png"
    ids = ["000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0", "f0ac7116-bb99-11e8-b2b9-ac1f6b6435d0"]
    assert main(["preview", str(real_data / "kaggle2021"), "--ids", *ids, "--size", "128", "--out", str(out)]) == 0
    h, w, _ = _png_size(out)
    assert w > h  # two panels side by side


def test_preview_tiny_fixture_and_generated_16bit(tiny, tmp_path):
    assert main(["preview", str(tiny), "--n", "6", "--out", str(tmp_path / "a.png")]) == 0
    _png_size(tmp_path / "a.png")
    write_dataset(tmp_path / "d16", ["0", "1 2", "3"], size=24, dtype=np.uint16, ext=".tif")
    assert main(["preview", str(tmp_path / "d16"), "--n", "3", "--out", str(tmp_path / "b.png")]) == 0
    _png_size(tmp_path / "b.png")


def test_preview_unknown_id_exits_2(tiny, tmp_path, capsys):
    assert main(["preview", str(tiny), "--ids", "nope", "--out", str(tmp_path / "p.png")]) == 2
    assert "nope" in capsys.readouterr().err


BAD_CASES = {
    "missing image": ("Id,Target\nf000,1\nf001,1\n", lambda d: (d / "train" / "f001_green.png").unlink(), "f001"),
    "unknown class": ("Id,Target\nf000,1\nf001,42\n", None, "unknown class ids 42"),
    # labels may be class names (Cytosol is class 25): a misspelt one is refused with the closest name
    "unknown name": (
        "Id,Target\nf000,1\nf001,Cytosl\n",
        None,
        "unknown class names 'Cytosl' (did you mean 'Cytosol'?)",
    ),
    "non-ASCII digit": ("Id,Target\nf000,1\nf001,\u0663\n", None, "written with non-ASCII digits"),
    "empty label": ("Id,Target\nf000,1\nf001,\n", None, "empty label"),
    "duplicate": ("Id,Target\nf000,1\nf001,1\nf001,2\n", None, "duplicate id"),
    "dot-dot id": ("Id,Target\nf000,1\nf001,1\n..,2\n", None, "path separator"),
    "slash id": ("Id,Target\nf000,1\nf001,1\nx/../../f000,2\n", None, "path separator"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_exits_2_naming_the_rows_and_skip_bad_recovers(case, tmp_path, capsys):
    csv, damage, expected = BAD_CASES[case]
    data = tmp_path / "d"
    write_dataset(data, ["1", "1"], size=16)
    (data / "train.csv").write_text(csv)
    if damage:
        damage(data)
    args = ["cache", "--data", str(data), "--img-size", "8", "--cache-dir", str(tmp_path / "c"), "--workers", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("locbench cache: error:") and expected in err and "Traceback" not in err
    assert "--skip-bad" in err
    assert main(args + ["--skip-bad"]) == 0
    assert "fields, stains red,green,blue,yellow" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["zero-byte", "truncated", "not-an-image", "size-mismatch"])
def test_undecodable_images_exit_2_then_skip(damage, tmp_path, capsys):
    data = tmp_path / "d"
    write_dataset(data, ["1", "2", "3"], size=32)
    path = data / "train" / "f002_red.png"
    if damage == "zero-byte":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "not-an-image":
        path.write_text("hello")
    else:
        cv2.imwrite(str(path), np.zeros((31, 32), np.uint8))
    args = ["cache", "--data", str(data), "--img-size", "8", "--cache-dir", str(tmp_path / "c"), "--workers", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 of 3 fields cannot be decoded" in err and "f002" in err and "f001" not in err
    assert main(args + ["--skip-bad"]) == 0
    assert "1 fields could not be decoded" in capsys.readouterr().out


def test_wrong_separator_csv_exits_2(tmp_path, capsys):
    write_dataset(tmp_path / "d", ["1"])
    (tmp_path / "d" / "train.csv").write_text("Id;Target\nf000;1\n")
    assert main(["data", "info", str(tmp_path / "d")]) == 2
    assert "';'-separated" in capsys.readouterr().err
