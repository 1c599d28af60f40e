"""Data as a lab has it: stain names (``data.stains``), one multi-channel file per field (OME-TIFF, OME-Zarr) chosen
by channel name or index, labels by class name, and the same data options on every command that reads data."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import tifffile

from locbench.cli import build_parser, main
from locbench.commands._common import DATA_OPTIONS, overrides_from_args
from locbench.config import load_config
from locbench.data.channels import STAINS
from locbench.data.formats import load_table
from locbench.data.images import ImageReadError, read_field_raw, read_field_stains
from locbench.errors import BadInputError, LocbenchError

OWN = {"blue": "DAPI", "green": "GFP", "red": "Tubulin", "yellow": "Calreticulin"}
#: distinct pixels per stain, so a mix-up of two stains shows
PIXELS = {
    name: np.full((6, 6), 1000 * (k + 1), np.uint16) + np.arange(36, dtype=np.uint16).reshape(6, 6)
    for k, name in enumerate(OWN.values())
}


def _csv(folder, rows=("w1,Nucleoplasm", "w2,Cytosol")):
    folder.mkdir(exist_ok=True)
    (folder / "labels.csv").write_text("image,classes\n" + "\n".join(rows) + "\n")
    return folder / "labels.csv"


def _own_names(folder, ids=("w1", "w2")):
    for fid in ids:
        for name, pixels in PIXELS.items():
            tifffile.imwrite(folder / f"{fid}_{name}.tif", pixels)


def _load(csv, **kw):
    return load_table(csv, id_col="image", label_col="classes", classes="hpa2021", **kw)


# -- data.stains ---------------------------------------------------------------------------------------------------


def test_stain_map_completes_and_names_unknown_stains():
    assert load_config(None, {"data.stains.blue": "DAPI"}).data.stains == {
        "red": "red",
        "green": "green",
        "blue": "DAPI",
        "yellow": "yellow",
    }
    assert load_config(None, {"data.stains": {"green": "GFP"}}).data.stains["green"] == "GFP"
    with pytest.raises(LocbenchError, match=r"data.stains.blu: 'blu' is not a stain \(did you mean blue\?\)"):
        load_config(None, {"data.stains": {"blu": "DAPI"}})
    with pytest.raises(LocbenchError, match="data.stains has no 'purple'"):
        load_config(None, {"data.stains.purple": "X"})
    with pytest.raises(LocbenchError, match="data.stains.green"):
        load_config(None, {"data.stains.green": "a/b"})
    with pytest.raises(LocbenchError, match="data.stains.green and data.stains.blue both name 'green'"):
        load_config(None, {"data.stains.blue": "green"})
    assert load_config(None, {"data.stains": {"blue": "green", "green": "GFP"}}).data.stains["blue"] == "green"


def test_stain_files_by_the_users_names_are_read_per_stain(tmp_path):
    csv = _csv(tmp_path / "own")
    _own_names(tmp_path / "own")
    table = _load(csv, stains=OWN)
    assert table.stains == STAINS
    assert table.paths(0)["blue"].name == "w1_DAPI.tif"
    raw = read_field_raw(table.sources(0), STAINS, 6)
    for k, stain in enumerate(STAINS):
        np.testing.assert_array_equal(raw[k], PIXELS[OWN[stain]])


def test_a_stain_name_no_file_has_names_its_key(tmp_path, capsys):
    csv = _csv(tmp_path / "own")
    _own_names(tmp_path / "own")
    with pytest.raises(
        LocbenchError, match=r"data.stains.blue is 'Hoechst' but no field has such a file \(e.g. w1_Hoechst"
    ):
        _load(csv, stains={**OWN, "blue": "Hoechst"})
    args = ["data", "info", str(csv), "--id-col", "image", "--label-col", "classes", "--classes", "hpa2021"]
    assert main([*args, "--stains", "blue=Hoechst,green=GFP,red=Tubulin,yellow=Calreticulin"]) == 2
    assert "data.stains.blue is 'Hoechst'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--stains", "purple=DAPI"])
    assert "argument --stains: purple: 'purple' is not a stain" in capsys.readouterr().err
    # a stain set to null is not looked for: the dataset has three stains
    assert _load(csv, stains={**OWN, "yellow": None}).stains == ("red", "green", "blue")


# -- one multi-channel file per field -------------------------------------------------------------------------------


def _ome_tiff(path, names=tuple(OWN.values())):
    data = np.stack([PIXELS[n] for n in OWN.values()])
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "CYX", "Channel": {"Name": list(names)}})


def test_ome_tiff_channels_by_name_or_index(tmp_path):
    csv = _csv(tmp_path / "ome")
    for fid in ("w1", "w2"):
        _ome_tiff(tmp_path / "ome" / f"{fid}.ome.tif")
    by_name = _load(csv, pattern="{id}.ome.tif", stains=OWN)
    assert by_name.multichannel and by_name.sources(0)["blue"].channel == "DAPI"
    raw = read_field_raw(by_name.sources(1), STAINS, 6)
    for k, stain in enumerate(STAINS):
        np.testing.assert_array_equal(raw[k], PIXELS[OWN[stain]])
    # case-insensitive names and 0-based indices choose the same planes
    lower = read_field_raw(
        _load(csv, pattern="{id}.ome.tif", stains={s: n.lower() for s, n in OWN.items()}).sources(0), STAINS, 6
    )
    index = {s: list(OWN.values()).index(n) for s, n in OWN.items()}
    by_index = read_field_raw(_load(csv, pattern="{id}.ome.tif", stains=index).sources(0), STAINS, 6)
    np.testing.assert_array_equal(lower, raw)
    np.testing.assert_array_equal(by_index, raw)


def test_ome_tiff_unknown_channel_names_the_key_and_the_channels(tmp_path):
    csv = _csv(tmp_path / "ome")
    for fid in ("w1", "w2"):
        _ome_tiff(tmp_path / "ome" / f"{fid}.ome.tif")
    table = _load(csv, pattern="{id}.ome.tif", stains={**OWN, "blue": "Hoechst"})
    with pytest.raises(
        ImageReadError,
        match=r"no channel named 'Hoechst'; its channels are DAPI, GFP, Tubulin, "
        r"Calreticulin \(stain blue: data.stains.blue\)",
    ):
        read_field_stains(table.sources(0), ["blue"])
    with pytest.raises(ImageReadError, match="has 4 channels"):
        read_field_stains(_load(csv, pattern="{id}.ome.tif", stains={"green": 7}).sources(0), ["green"])


def test_multichannel_data_info_and_cache_through_the_cli(tmp_path, capsys):
    csv = _csv(tmp_path / "ome")
    for fid in ("w1", "w2"):
        _ome_tiff(tmp_path / "ome" / f"{fid}.ome.tif")
    data = [
        str(csv),
        "--id-col",
        "image",
        "--label-col",
        "classes",
        "--classes",
        "hpa2021",
        "--pattern",
        "{id}.ome.tif",
    ]
    stains = ["--stains", "blue=DAPI,green=GFP,red=Tubulin,yellow=Calreticulin"]
    assert main(["data", "info", *data, *stains]) == 0
    assert "w1.ome.tif channel 'GFP': 6x6 uint16" in capsys.readouterr().out
    cache = ["--img-size", "6", "--channels", "rgby", "--workers", "0", "--cache-dir", str(tmp_path / "c")]
    assert main(["cache", "--data", *data, *stains, *cache]) == 0
    assert (
        main(["cache", "--data", *data, "--stains", "blue=GFP,green=DAPI,red=Tubulin,yellow=Calreticulin", *cache]) == 0
    )
    assert len(list((tmp_path / "c").iterdir())) == 2  # the stain mapping is part of the cache key
    # without a mapping the OME names are not the stains': refused naming the file, its channels and the key
    assert main(["data", "info", *data]) == 0  # info shows the per-stain error instead of failing
    assert "no channel named 'green'; its channels are DAPI" in capsys.readouterr().out
    assert main(["cache", "--data", *data, *cache]) == 2
    assert "data.stains.red" in capsys.readouterr().err


def test_a_z_stack_is_refused_even_with_a_channel(tmp_path):
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((2, 3, 4, 4), np.uint8), metadata={"axes": "ZCYX"})
    from locbench.data.images import StainFile

    with pytest.raises(ImageReadError, match="no z, no time"):
        read_field_stains({"green": StainFile(tmp_path / "z.tif", 1)}, ["green"])


def _ome_zarr(path, data, names, *, zarr_format):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    multiscales = [
        {
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}],
        }
    ]
    omero = {"channels": [{"label": n} for n in names]}
    if zarr_format == 2:  # NGFF 0.4: metadata at the top level of the attributes
        group.attrs.update({"multiscales": [{"version": "0.4", **multiscales[0]}], "omero": omero})
    else:  # NGFF 0.5: under "ome"
        group.attrs.update({"ome": {"version": "0.5", "multiscales": multiscales, "omero": omero}})
    array = group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(1, *data.shape[1:]))
    array[...] = data


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_two_by_two_ome_zarr_is_read_by_channel_name(tmp_path, zarr_format):
    csv = _csv(tmp_path / "zarr")
    data = (np.arange(16, dtype=np.uint16).reshape(4, 2, 2) + 1) * 100
    for fid in ("w1", "w2"):
        _ome_zarr(tmp_path / "zarr" / f"{fid}.ome.zarr", data, list(OWN.values()), zarr_format=zarr_format)
    table = _load(csv, pattern="{id}.ome.zarr", stains=OWN)
    images = read_field_stains(table.sources(0), STAINS)
    for stain in STAINS:
        np.testing.assert_array_equal(images[stain], data[list(OWN.values()).index(OWN[stain])])
    assert images["blue"].tolist() == [[100, 200], [300, 400]]


def test_ome_zarr_without_the_zarr_package_is_refused_naming_the_file(tmp_path, monkeypatch, capsys):
    import sys

    csv = _csv(tmp_path / "zarr", rows=("w1,Nucleoplasm",))
    (tmp_path / "zarr" / "w1.ome.zarr").mkdir()
    (tmp_path / "zarr" / "w1.ome.zarr" / "zarr.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "zarr", None)  # as if it were not installed
    data = [
        str(csv),
        "--id-col",
        "image",
        "--label-col",
        "classes",
        "--classes",
        "hpa2021",
        "--pattern",
        "{id}.ome.zarr",
    ]
    cache = ["--img-size", "16", "--workers", "0", "--cache-dir", str(tmp_path / "c"), "--stains", "green=GFP"]
    assert main(["cache", "--data", *data, *cache]) == 2
    err = capsys.readouterr().err
    assert "w1.ome.zarr" in err and "pip install 'locbench[zarr]'" in err and "Traceback" not in err


# -- labels by name ----------------------------------------------------------------------------------------------------


def test_labels_by_name_number_and_separator(tmp_path):
    rows = ("w1,Nucleoplasm;Cytosol", "w2,cytosol", "w3,0;16", "w4,MITOCHONDRIA;nucleoplasm")
    csv = _csv(tmp_path / "lab", rows)
    table = _load(csv, check_images=False)
    names = [[table.scheme.classes[j] for j in np.flatnonzero(t)] for t in table.targets]
    assert names == [
        ["Nucleoplasm", "Cytosol"],
        ["Cytosol"],
        ["Nucleoplasm", "Cytosol"],
        ["Nucleoplasm", "Mitochondria"],
    ]
    pipe = _load(_csv(tmp_path / "pipe", ("w1,Nucleoplasm|Nuclear membrane",)), check_images=False)
    assert np.flatnonzero(pipe.targets[0]).tolist() == [0, 1]
    # one class name with spaces under a whitespace separator is that class, not two words
    spaced = _load(_csv(tmp_path / "sp", ("w1,Nuclear membrane",)), label_sep=" ", check_images=False)
    assert np.flatnonzero(spaced.targets[0]).tolist() == [1]
    spaced = load_table(
        _csv(tmp_path / "sp2", ("w1,Nuclear membrane",)),
        id_col="image",
        label_col="classes",
        classes="hpa2021",
        check_images=False,
    )
    assert np.flatnonzero(spaced.targets[0]).tolist() == [1]


def test_labels_by_name_from_a_class_file(tmp_path):
    (tmp_path / "classes.txt").write_text("Nucleus\nCytoplasm\nMembrane\n")
    csv = _csv(tmp_path / "own", ("w1,nucleus;MEMBRANE", "w2,1"))
    table = load_table(csv, id_col="image", label_col="classes", classes=tmp_path / "classes.txt", check_images=False)
    assert table.targets.tolist() == [[1, 0, 1], [0, 1, 0]]


def test_unknown_names_and_non_ascii_digits_are_refused_with_the_row(tmp_path):
    rows = ("w1,Nucleoplasm", "w2,Nucleoplsm;Cytosol", "w3,\u0663", "w4,Kitchen sink")
    with pytest.raises(BadInputError) as e:
        _load(_csv(tmp_path / "bad", rows), check_images=False)
    msg = str(e.value)
    assert "3 of 4 rows" in msg
    assert (
        "line 3, id 'w2': label 'Nucleoplsm;Cytosol' has unknown class names 'Nucleoplsm' (did you mean 'Nucleoplasm'?)"
        in msg
    )
    assert "line 4, id 'w3': label '\u0663' has class id '\u0663' written with non-ASCII digits" in msg
    assert "line 5, id 'w4': label 'Kitchen sink' has unknown class names 'Kitchen sink' (scheme 'hpa2021')" in msg
    assert "id 'w1'" not in msg  # (the tmp path may hold 'w1': pytest-xdist's popen-gw1)


# -- one set of data options -------------------------------------------------------------------------------------------

DATA_COMMANDS = (
    ["cells", "evaluate"],
    ["cells", "predict"],
    ["train"],
    ["evaluate"],
    ["predict"],
    ["segment"],
    ["cache"],
    ["data", "info"],
    ["preview"],
    ["split"],
    ["sweep"],
)


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


@pytest.mark.parametrize("words", DATA_COMMANDS, ids=" ".join)
def test_every_data_command_has_the_same_data_options(words):
    parser = _subparser(build_parser(), words)
    flags = {s for a in parser._actions for s in a.option_strings}
    expected = {flag for dest, (_, flag, _) in DATA_OPTIONS.items() if dest != "data"}
    assert expected <= flags, sorted(expected - flags)
    assert "--data" in flags or any(a.dest == "data" and not a.option_strings for a in parser._actions)


def test_train_takes_data_options_as_flags_and_set_still_wins():
    args = build_parser().parse_args(
        ["train", "--id-col", "image", "--stains", "blue=DAPI,green=1", "--out", "x", "--set", "data.label_col=c"]
    )
    overrides = overrides_from_args(args)
    assert overrides["data.id_col"] == "image" and overrides["data.label_col"] == "c"
    cfg = load_config(None, overrides)
    assert cfg.data.stains == {"red": "red", "green": 1, "blue": "DAPI", "yellow": "yellow"}
    args = build_parser().parse_args(["train", "--id-col", "image", "--out", "x", "--set", "data.id_col=ID"])
    assert load_config(None, overrides_from_args(args)).data.id_col == "ID"
