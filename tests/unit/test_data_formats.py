"""Label tables: Kaggle 2021/2018 and generic layouts, CSV robustness, and every bad-input case."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from fixtures.data_factory import TINY_2018, write_dataset

from locbench.data.formats import load_table, summarize
from locbench.errors import BadInputError, LocbenchError


def test_real_kaggle2018_table(real_data):
    table = load_table(real_data / "kaggle2018")
    assert table.format == "kaggle2018" and table.scheme.name == "hpa2018"
    assert len(table) == 101 and table.targets.shape == (101, 28) and table.targets.dtype == np.uint8
    i = table.ids.index("027a702a-bbca-11e8-b2bc-ac1f6b6435d0")  # "22 2" in train.csv
    assert np.flatnonzero(table.targets[i]).tolist() == [2, 22]
    assert table.paths(i)["yellow"].name == "027a702a-bbca-11e8-b2bc-ac1f6b6435d0_yellow.png"
    assert all(p.is_file() for p in table.paths(i).values())


def test_real_kaggle2021_table(real_data):
    table = load_table(real_data / "kaggle2021" / "train.csv")  # a CSV path works as well as the folder
    assert table.format == "kaggle2021" and table.num_classes == 19 and len(table) == 4
    i = table.ids.index("000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0")  # "7|1|2|0"
    assert np.flatnonzero(table.targets[i]).tolist() == [0, 1, 2, 7]
    info = summarize(table)
    assert info["sample"]["stains"]["green"]["width"] == 2048 and info["sample"]["stains"]["green"]["dtype"] == "uint8"
    assert info["class_counts"]["Nucleoplasm"] == int(table.targets[:, 0].sum())


def test_committed_tiny_fixture_loads():
    table = load_table(TINY_2018)
    assert len(table) == 3 and [int(t.sum()) for t in table.targets] == [1, 2, 3]


def test_kaggle2021_layout_with_pipes(tmp_path):
    write_dataset(tmp_path, ["0|18", "5"], fmt="kaggle2021")
    table = load_table(tmp_path)
    assert table.format == "kaggle2021"
    assert table.targets[0, [0, 18]].tolist() == [1, 1] and table.targets[0].sum() == 2


def test_kaggle2018_tiff_extension_detected_per_id(tmp_path):
    write_dataset(tmp_path, ["1", "2 3"], ids=["a", "b"], ext=".png")
    write_dataset(tmp_path / "t", ["4"], ids=["c"], ext=".tiff", dtype=np.uint16)
    for f in (tmp_path / "t" / "train").iterdir():
        f.rename(tmp_path / "train" / f.name)
    (tmp_path / "train.csv").write_text("Id,Target\na,1\nb,2 3\nc,4\n")
    table = load_table(tmp_path)
    assert [table.paths(i)["green"].suffix for i in range(3)] == [".png", ".png", ".tiff"]


def test_bom_and_windows_line_ends(tmp_path):
    write_dataset(tmp_path, ["1", "2"])
    (tmp_path / "train.csv").write_bytes(b"\xef\xbb\xbfId,Target\r\nf000,1\r\nf001,2 0\r\n")
    table = load_table(tmp_path)
    assert table.ids == ["f000", "f001"] and table.format == "kaggle2018"
    assert np.flatnonzero(table.targets[1]).tolist() == [0, 2]


def test_generic_layout_with_pattern_class_file_and_groups(tmp_path):
    img_dir = tmp_path / "images"
    write_dataset(tmp_path / "src", ["0", "1", "2"], ids=["x1", "x2", "x3"], ext=".tif")
    for f in (tmp_path / "src" / "train").iterdir():
        fid, color = f.stem.split("_")
        (img_dir / color).mkdir(parents=True, exist_ok=True)
        f.rename(img_dir / color / f"{fid}.tif")
    (tmp_path / "labels.csv").write_text("image,antibody,locs\nx1,HPA1,0;2\nx2,HPA1,1\nx3,HPA2,2\n")
    (tmp_path / "classes.txt").write_text("nucleus\ncytosol\nmito\n")
    table = load_table(
        tmp_path / "labels.csv",
        id_col="image",
        label_col="locs",
        pattern="{channel}/{id}.tif",
        image_dir="images",
        classes=tmp_path / "classes.txt",
        group_col="antibody",
    )
    assert table.format == "generic" and table.scheme.classes == ("nucleus", "cytosol", "mito")
    assert table.targets.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]  # ';' detected as the label separator
    assert table.groups.tolist() == ["HPA1", "HPA1", "HPA2"]
    assert table.paths(0)["blue"] == img_dir / "blue" / "x1.tif"
    assert table.column("antibody").tolist() == ["HPA1", "HPA1", "HPA2"]


def test_generic_without_classes_is_a_clear_error(tmp_path):
    (tmp_path / "l.csv").write_text("a,b\nx,1\n")
    with pytest.raises(LocbenchError, match="--classes"):
        load_table(tmp_path / "l.csv", id_col="a", label_col="b", check_images=False)


def test_three_stain_dataset_has_no_yellow(tmp_path):
    write_dataset(tmp_path, ["1", "2"], colors=("red", "green", "blue"))
    table = load_table(tmp_path)
    assert table.stains == ("red", "green", "blue") and "yellow" not in table.paths(0)


def test_subset_keeps_rows_aligned(tmp_path):
    write_dataset(tmp_path, ["1", "2", "3"], ext=".png")
    table = load_table(tmp_path)
    sub = table.subset([2, 0])
    assert sub.ids == ["f002", "f000"] and sub.targets[0, 3] == 1 and sub.paths(0)["red"].name == "f002_red.png"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"Id;Target\nf000;1\n", "';'-separated"),
        (b"Name,Classes\nf000,1\n", "matches no known layout"),
        (b"Id,Target\n", "no usable rows"),
    ],
)
def test_unusable_csv_is_a_clear_error(tmp_path, content, match):
    write_dataset(tmp_path, ["1"])
    (tmp_path / "train.csv").write_bytes(content)
    with pytest.raises(LocbenchError, match=match):
        load_table(tmp_path)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(LocbenchError, match="no such dataset"):
        load_table(tmp_path / "nope")


def _write_bad_rows(tmp_path):
    write_dataset(tmp_path, ["1"] * 4, ids=["ok", "gone", "ok2", "dup"])
    (tmp_path / "train" / "gone_green.png").unlink()
    (tmp_path / "train" / "gone_blue.png").unlink()
    rows = [
        "ok,1",
        "gone,2",
        "ok2,3",
        "dup,4",
        "dup,5",
        "big,1 99",
        "word,1 nucleus",
        "blank,",
        "../etc,1",
        "a/b,1",
    ]
    (tmp_path / "train.csv").write_text("Id,Target\n" + "\n".join(rows) + "\n")


def test_bad_rows_are_all_listed_in_one_error(tmp_path):
    _write_bad_rows(tmp_path)
    with pytest.raises(BadInputError) as err:
        load_table(tmp_path)
    msg = str(err.value)
    assert "7 of 10 rows" in msg
    expected = {
        "'gone'": "gone_green.png",
        "'dup'": "duplicate id (first on line 5)",
        "'big'": "unknown class ids 99",
        "'word'": "unknown class names 'nucleus'",
        "'blank'": "empty label",
        "'../etc'": "path separator",
        "'a/b'": "path separator",
    }
    for fid, detail in expected.items():
        line = next(ln for ln in msg.splitlines() if f"id {fid}:" in ln)
        assert detail in line
    assert "gone_blue.png" in msg and "--skip-bad" in msg
    assert "'ok'" not in msg and "'ok2'" not in msg


def test_skip_bad_drops_and_logs(tmp_path, caplog):
    _write_bad_rows(tmp_path)
    with caplog.at_level(logging.WARNING):
        table = load_table(tmp_path, skip_bad=True)
    assert table.ids == ["ok", "ok2", "dup"]  # the first 'dup' row is fine; its repeat is dropped
    assert "dropped 7 of 10 rows" in caplog.text


def test_error_lists_first_20_and_counts_the_rest(tmp_path):
    write_dataset(tmp_path, ["1"] * 26, ids=["f000", *(f"m{k:02d}" for k in range(25))])
    rows = [f"m{k:02d},99" for k in range(25)]
    (tmp_path / "train.csv").write_text("Id,Target\nf000,1\n" + "\n".join(rows) + "\n")
    with pytest.raises(BadInputError) as err:
        load_table(tmp_path)
    assert len(err.value.items) == 20 and "m19" in str(err.value) and "and 5 more" in str(err.value)
    assert "labels" in err.value.fix and "image files" not in err.value.fix


def test_missing_files_name_the_paths_tried_the_pattern_and_the_option(tmp_path):
    write_dataset(tmp_path, ["1"])
    rows = [f"m{k:02d},1" for k in range(25)]
    (tmp_path / "train.csv").write_text("Id,Target\nf000,1\n" + "\n".join(rows) + "\n")
    with pytest.raises(BadInputError) as err:
        load_table(tmp_path)
    text = str(err.value)
    first = [ln for ln in text.splitlines() if ln.startswith("  - ")]
    assert len(first) == 5 and first[0].startswith("  - line 3, id 'm00': missing ")
    assert str(tmp_path / "train" / "m00_green.png") in first[0] and "and 20 more" in text
    assert "25 of 26 rows cannot be used" in text and "25 lack image files" in text
    assert "'{id}_{channel}{ext}'" in text and "data.pattern" in text and "--pattern" in text
    assert "image files" in err.value.fix and "label" not in err.value.fix and "--skip-bad" in err.value.fix


def test_missing_files_in_per_field_folders_and_a_subfolder_pattern(tmp_path):
    (tmp_path / "train.csv").write_text("Id,Target\na,1\nb,1\nc,1\n")
    for fid in ("a", "b"):
        (tmp_path / "img" / fid).mkdir(parents=True)
    for fid, stains in (("a", "green blue"), ("b", "green")):
        for stain in stains.split():
            (tmp_path / "img" / fid / f"{stain}.png").write_bytes(b"x")
    table = load_table(tmp_path, pattern="img/{id}/{channel}.png", check_images=True, skip_bad=True)
    assert table.ids == ["a"] and table.stains == ("green", "blue")
    with pytest.raises(BadInputError) as err:
        load_table(tmp_path, pattern="img/{id}/{channel}.png")
    assert str(tmp_path / "img" / "c" / "green.png") in str(err.value)
    assert str(tmp_path / "img" / "b" / "blue.png") in str(err.value)


def test_check_images_off_skips_the_filesystem(tmp_path):
    (tmp_path / "train.csv").write_text("Id,Target\nzz,1\n")
    table = load_table(tmp_path, check_images=False)
    assert table.ids == ["zz"]


def test_patterns_that_step_out_of_the_image_folder_still_find_their_files(tmp_path):
    write_dataset(tmp_path, ["1", "2"], ids=["a", "b"])
    (tmp_path / "elsewhere").mkdir()
    for f in (tmp_path / "train").glob("*.png"):
        f.rename(tmp_path / "elsewhere" / f.name)
    for pattern in ("../elsewhere/{id}_{channel}.png", "./../elsewhere/{id}_{channel}{ext}"):
        table = load_table(tmp_path, pattern=pattern)
        assert table.ids == ["a", "b"] and all(p.is_file() for p in table.paths(1).values())
    with pytest.raises(BadInputError, match="lack image files"):
        load_table(tmp_path, pattern="../nowhere/{id}_{channel}.png")
