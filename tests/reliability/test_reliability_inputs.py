"""Every bad input gets a clear answer: exit code 2, a message naming the file, row or key, and no traceback,
from every command that reads it (train, evaluate, predict, sweep, report, cache, synth, split, segment).

The data layer's own cases through `locbench cache` are in tests/integration/test_data_cli.py; here the same
kinds of mistakes reach the other commands, plus configs, sweep files, run folders and output paths.

Decisions on pixel types (also in docs/RELIABILITY.md): 8- and 16-bit unsigned stains are read (mixed in one
dataset too: 8-bit rows are widened exactly); float or 32-bit integer images are refused, naming the file,
because their scale is unknown (0..1? 0..4095?); a stain saved as RGB is read as its brightest plane (a gray
copied to 3 planes, or a stain tinted in its own color), not refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures.cli import run_cli

from locbench.cli import main

pytest_plugins = ["fixtures.synth_data"]


def _commands(data: Path, tmp: Path, trained: Path, kit) -> dict[str, list[str]]:
    """One invocation per command that reads a dataset, all on ``data``."""
    sweep = tmp / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"grid": {"loss.name": ["bce"]}, "config": {"train": {"epochs": 1}}}))
    over = kit.overrides(data)
    return {
        "train": ["train", "--out", str(tmp / "t"), *kit.set_args(over)],
        "split": ["split", "--data", str(data), "--out", str(tmp / "s.json")],
        "cache": ["cache", "--data", str(data), "--img-size", "32", "--cache-dir", str(tmp / "c"), "--workers", "0"],
        "sweep": ["sweep", str(sweep), "--out", str(tmp / "sw"), "--data", str(data)],
        "segment": ["segment", "--data", str(data), "--out", str(tmp / "masks")],
        "evaluate": ["evaluate", str(trained), "--data", str(data), "--split", "all", "--device", "cpu"],
        "predict": ["predict", str(trained), "--data", str(data), "--out", str(tmp / "p.csv"), "--device", "cpu"],
    }


CSV_DEFECTS = {
    # name: (change to train.csv, text the message must hold besides the file name)
    "wrong header": (lambda t: t.replace("ID,Label", "Name,Klass", 1), "matches no known layout"),
    "empty file": (lambda t: "", "is empty"),
    "semicolons": (lambda t: t.replace(",", ";"), "';'-separated"),
    "label out of range": (lambda t: _replace_label(t, 3, "25"), "unknown class ids 25"),
    # labels may be class names: a misspelt one is refused with the closest name
    "unknown class name": (lambda t: _replace_label(t, 3, "Nucleoplsm"), "did you mean 'Nucleoplasm'?"),
    "non-ASCII digit": (lambda t: _replace_label(t, 3, "\u0663"), "non-ASCII digits"),
    "id with ..": (lambda t: t.replace(t.splitlines()[3].split(",")[0], "../../etc", 1), "path separator"),
}


def _replace_label(text: str, row: int, label: str) -> str:
    lines = text.splitlines()
    lines[row] = lines[row].split(",")[0] + "," + label
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("defect", list(CSV_DEFECTS))
@pytest.mark.parametrize("command", ["train", "split", "sweep", "segment", "evaluate", "predict"])
def test_malformed_csv_is_refused_by_every_command(command, defect, dataset, trained_run, kit, tmp_path, capsys):
    if command == "predict" and defect in ("label out of range", "unknown class name", "non-ASCII digit"):
        pytest.skip("predict ignores labels: a bad label is no reason to refuse predicting")
    change, expected = CSV_DEFECTS[defect]
    csv = dataset / "train.csv"
    csv.write_text(change(csv.read_text()))
    code, err = run_cli(capsys, _commands(dataset, tmp_path, trained_run, kit)[command])
    assert code == 2
    assert str(csv) in err and expected in err
    if "label" in defect or defect == "id with ..":
        assert "line 4" in err  # the row is named: header is line 1


def test_bom_and_windows_line_ends_simply_work(dataset, tmp_path, capsys):
    plain = tmp_path / "plain.json"
    assert main(["split", "--data", str(dataset), "--out", str(plain)]) == 0
    csv = dataset / "train.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_text().replace("\n", "\r\n").encode())
    bom = tmp_path / "bom.json"
    assert main(["split", "--data", str(dataset), "--out", str(bom)]) == 0
    a, b = json.loads(plain.read_text()), json.loads(bom.read_text())
    assert a["parts"] == b["parts"] and len(a["parts"]["train"]) > 0


@pytest.mark.parametrize("command", ["train", "split", "cache", "sweep", "segment", "evaluate", "predict"])
def test_a_data_path_that_does_not_exist(command, trained_run, kit, tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    code, err = run_cli(capsys, _commands(missing, tmp_path, trained_run, kit)[command])
    assert code == 2 and str(missing) in err and ("no such dataset" in err or "does not exist" in err)


def _float_tiff(dataset: Path) -> Path:
    """Turn the dataset into TIFFs, one green stain of them 32-bit float; return that file."""
    import tifffile

    from locbench.data.images import read_image

    for png in sorted((dataset / "train").glob("*.png")):
        tifffile.imwrite(png.with_suffix(".tif"), read_image(png))
        png.unlink()
    tif = sorted((dataset / "train").glob("*_green.tif"))[5]
    tifffile.imwrite(tif, np.random.default_rng(0).random((64, 64), dtype=np.float32))
    return tif


@pytest.mark.parametrize("command", ["train", "predict"])
def test_a_32_bit_float_stain_is_refused_naming_the_file(command, dataset, trained_run, kit, tmp_path, capsys):
    tif = _float_tiff(dataset)
    code, err = run_cli(capsys, _commands(dataset, tmp_path, trained_run, kit)[command])
    assert code == 2 and tif.name in err and "float32" in err
    assert "--skip-bad" in err or command == "predict"  # predict has no --skip-bad: every image gets a prediction


def test_rgb_stain_is_read_as_its_brightest_plane_and_16_bit_mixes_with_8_bit(dataset, tmp_path, capsys):
    import cv2

    from locbench.data.cache import build_cache
    from locbench.data.formats import load_table

    greens = sorted((dataset / "train").glob("*_green.png"))
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(greens[0]), rgb)
    cv2.imwrite(str(greens[1]), np.full((64, 64), 65535, np.uint16))
    args = ["cache", "--data", str(dataset), "--img-size", "64", "--channels", "green", "--workers", "0"]
    code, _ = run_cli(capsys, [*args, "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    table = load_table(dataset)
    cache = build_cache(table, channels="green", size=64, cache_dir=tmp_path / "c", workers=0, progress=False)
    # the cache takes its pixel type from the first field (8-bit here); a 16-bit field keeps its brightness
    assert cache.dtype == np.uint8
    row = table.ids.index(greens[0].name.rsplit("_", 1)[0])
    assert np.array_equal(cache.get(row)[0], rgb.max(axis=2))
    assert (cache.get(table.ids.index(greens[1].name.rsplit("_", 1)[0]))[0] == 255).all()


def test_a_missing_or_empty_image_is_named_by_predict_and_evaluate(dataset, trained_run, kit, tmp_path, capsys):
    greens = sorted((dataset / "train").glob("*_green.png"))
    cmds = _commands(dataset, tmp_path, trained_run, kit)
    greens[1].write_bytes(b"")
    for command in ("predict", "evaluate"):
        code, err = run_cli(capsys, cmds[command])
        assert code == 2 and greens[1].name in err and "empty" in err
    greens[0].unlink()
    for command in ("predict", "evaluate"):
        code, err = run_cli(capsys, cmds[command])
        assert code == 2 and greens[0].name.rsplit("_", 1)[0] in err and "missing" in err


# ------------------------------------------------------------------------------------------- configs


def test_config_mistakes_name_the_file_and_key(kit, tmp_path, capsys):
    over = kit.overrides()
    base = ["train", "--out", str(tmp_path / "t"), *kit.set_args(over)]
    cases = {
        "optim:\n  weight_decay: heavy\n": "optim.weight_decay",
        "train:\n  epocs: 3\n": "train.epocs",
        "trian:\n  epochs: 3\n": "'trian'",
        "train: [1, 2\n": "not valid YAML",
        "- a\n- b\n": "top level must be a mapping",
    }
    for k, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"c{k}.yaml"
        path.write_text(text)
        code, err = run_cli(capsys, [*base, "--config", str(path)])
        assert code == 2 and expected in err, text
        if "epocs" in text:
            assert str(path) in err
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    code, err = run_cli(capsys, [*base, "--config", str(binary)])
    assert code == 2 and str(binary) in err and "UTF-8" in err
    code, err = run_cli(capsys, [*base, "--set", "train.epochs=many"])
    assert code == 2 and "train.epochs" in err and "int" in err
    assert not (tmp_path / "t").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("grid: {}\n", "the grid is empty"),
        ("grid:\n  loss.nmae: [bce, focal]\n", "did you mean loss.name"),
        ("grid:\n  loss.name: bce\n", "needs a non-empty list"),
        ("grid:\n  loss.name: [bce, nope]\n", "unknown loss 'nope'"),
        ("grid:\n  train.epochs: [1, two]\n", "train.epochs"),
        ("grdi:\n  loss.name: [bce]\n", "unknown sweep key(s) grdi"),
        ("grid:\n  loss.name: [bce]\nexclude:\n  - {loss.nmae: bce}\n", "not a grid axis"),
    ],
)
def test_sweep_file_mistakes(text, expected, kit, tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    code, err = run_cli(capsys, ["sweep", str(path), "--out", str(tmp_path / "sw"), "--data", str(kit.data)])
    assert code == 2 and str(path) in err and expected in err
    assert not (tmp_path / "sw" / "plan.json").exists()


# ------------------------------------------------------------------------------------------- run folders


def _edit_json(path: Path, **changes) -> None:
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_checkpoint_from_another_run_is_refused(command, run_copy, kit, tmp_path, capsys):
    best = run_copy / "checkpoints" / "best.json"
    args = {
        "evaluate": ["evaluate", str(run_copy), "--device", "cpu", "--workers", "0"],
        "predict": ["predict", str(run_copy), "--data", str(kit.data), "--out", str(tmp_path / "p.csv")],
    }[command]
    meta = json.loads(best.read_text())
    # a 28-class checkpoint (another class scheme) in a 19-class run
    _edit_json(best, num_classes=28, class_names=[f"c{i}" for i in range(28)])
    code, err = run_cli(capsys, args)
    assert code == 2 and str(best) in err and "28 classes" in err and "19" in err
    # a 4-channel (rgby) checkpoint in a green (3-channel) run
    best.write_text(json.dumps(dict(meta, in_chans=4, channels=["red", "green", "blue", "yellow"])))
    code, err = run_cli(capsys, args)
    assert code == 2 and str(best) in err and "red,green,blue,yellow" in err and "data.channels=green" in err


def test_run_folders_from_a_newer_locbench(run_copy, kit, tmp_path, capsys):
    summary, best = run_copy / "summary.json", run_copy / "checkpoints" / "best.json"
    _edit_json(best, format_version=2)
    code, err = run_cli(capsys, ["evaluate", str(run_copy), "--device", "cpu"])
    assert code == 2 and str(best) in err and "newer locbench" in err
    _edit_json(summary, format_version=2)
    for args in (
        ["evaluate", str(run_copy), "--device", "cpu"],
        ["predict", str(run_copy), "--data", str(kit.data), "--out", str(tmp_path / "p.csv")],
    ):
        code, err = run_cli(capsys, args)
        assert code == 2 and str(summary) in err and "newer locbench" in err
    # the report never averages a newer summary in: the run is listed as unusable, with the reason
    report = tmp_path / "sweep"
    report.mkdir()
    shutil.copytree(run_copy, report / "newer")
    from locbench.report.collect import collect

    runs = {r.run_id: r for r in collect(report).runs}
    assert not runs["newer"].usable and "newer than this locbench" in runs["newer"].reason


def test_resume_with_a_newer_epoch_checkpoint_is_refused(kit, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), *kit.set_args(kit.overrides())]
    assert main(args) == 0
    for meta in (run / "checkpoints").glob("epoch-*.json"):
        _edit_json(meta, format_version=2)
    (run / "status").write_text("running\n")
    code, err = run_cli(capsys, [*args, "--resume"])
    assert code == 2 and "epoch-0001.json" in err and "newer locbench" in err


def test_damaged_thresholds_json_is_named(run_copy, capsys):
    (run_copy / "thresholds.json").write_text('{"classes": [')
    code, err = run_cli(capsys, ["evaluate", str(run_copy), "--device", "cpu"])
    assert code == 2 and "thresholds.json" in err and "not valid JSON" in err
    (run_copy / "thresholds.json").unlink()
    code, err = run_cli(capsys, ["evaluate", str(run_copy), "--device", "cpu"])
    assert code == 2 and "thresholds.json is missing" in err


# ------------------------------------------------------------------------------------------- output paths


def _out_commands(target: Path, trained: Path, kit, tmp: Path) -> dict[str, list[str]]:
    sweep = tmp / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"grid": {"loss.name": ["bce"]}}))
    return {
        "train": ["train", "--out", str(target), *kit.set_args(kit.overrides())],
        "sweep": ["sweep", str(sweep), "--out", str(target), "--data", str(kit.data)],
        "cache": ["cache", "--data", str(kit.data), "--img-size", "32", "--cache-dir", str(target), "--workers", "0"],
        "synth": ["synth", str(target), "--images", "2", "--size", "64", "--cells", "3-6"],
        "segment": ["segment", "--data", str(kit.data), "--out", str(target)],
    }


@pytest.mark.parametrize("command", ["train", "sweep", "cache", "synth", "segment"])
def test_an_out_folder_that_is_a_file(command, trained_run, kit, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for target in (afile, afile / "below"):
        code, err = run_cli(capsys, _out_commands(target, trained_run, kit, tmp_path)[command])
        assert code == 2 and str(afile) in err, err
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["split", "predict", "evaluate"])
def test_an_out_file_that_is_a_folder_or_below_a_file(command, trained_run, kit, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    for target in (folder, afile / "out.json"):
        args = {
            "split": ["split", "--data", str(kit.data), "--out", str(target)],
            "predict": ["predict", str(trained_run), "--data", str(kit.data), "--out", str(target)],
            "evaluate": ["evaluate", str(trained_run), "--device", "cpu", "--out", str(target)],
        }[command]
        code, err = run_cli(capsys, args)
        assert code == 2 and (str(target) in err or str(afile) in err), err


@pytest.mark.parametrize("command", ["train", "sweep", "cache", "synth"])
def test_an_unwritable_out_folder_is_refused_before_work_starts(
    command, trained_run, kit, tmp_path, capsys, monkeypatch
):
    import os
    import tempfile

    target = tmp_path / "locked"
    target.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: refuse scratch files in that folder as the OS would
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve().is_relative_to(target.resolve()):
                raise PermissionError(13, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    else:
        target.chmod(0o555)
    try:
        code, err = run_cli(capsys, _out_commands(target, trained_run, kit, tmp_path)[command])
    finally:
        target.chmod(0o755)
    assert code == 2 and str(target) in err and "Permission denied" in err
    assert not [p for p in target.rglob("*") if p.is_file()]  # nothing written: no half dataset, run or cache


def test_stains_of_different_sizes_stop_training_naming_the_field(dataset, kit, tmp_path, capsys):
    import cv2

    red = sorted((dataset / "train").glob("*_red.png"))[3]
    cv2.imwrite(str(red), np.zeros((48, 64), np.uint8))
    over = kit.overrides(dataset, data__channels="rgby", data__cache_dir=str(tmp_path / "c"))
    code, err = run_cli(capsys, ["train", "--out", str(tmp_path / "t"), *kit.set_args(over)])
    assert code == 2 and red.name.rsplit("_", 1)[0] in err and "differ in size" in err and "--skip-bad" in err


def test_a_field_smaller_than_the_model_input_stops_training_naming_it(dataset, kit, tmp_path, capsys):
    import cv2

    small = sorted((dataset / "train").glob("*_green.png"))[5]
    for stain in ("red", "green", "blue", "yellow"):
        cv2.imwrite(str(small.with_name(small.name.replace("_green", f"_{stain}"))), np.zeros((16, 24), np.uint8))
    over = kit.overrides(dataset, data__cache_dir=str(tmp_path / "c"), data__img_size=32)
    code, err = run_cli(capsys, ["train", "--out", str(tmp_path / "t"), *kit.set_args(over)])
    assert code == 2 and small.name in err and "smaller than the model input of 32 x 32" in err, err
    assert "--img-size 24 or less" in err and not (tmp_path / "t" / "checkpoints").exists()


@pytest.mark.parametrize("what", ["missing", "a file", "empty folder", "not a sweep"])
def test_report_and_status_on_something_that_is_not_a_sweep(what, tmp_path, capsys):
    target = tmp_path / "target"
    if what == "a file":
        target.write_text("x")
    elif what == "empty folder":
        target.mkdir()
    elif what == "not a sweep":
        (target / "sub").mkdir(parents=True)
        (target / "sub" / "notes.txt").write_text("x")
    for command in ("report", "status"):
        code, err = run_cli(capsys, [command, str(target)])
        assert code == 2 and str(target) in err
