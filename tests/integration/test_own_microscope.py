"""The README's "Your own microscope" section, run as written: a fresh folder of ``{well}_{DAPI,GFP,Tubulin,
Calreticulin}.tif`` files and an ``image,classes`` CSV of class names separated by ``;``.

The commands are read from the README's fenced block, so the section cannot drift from what is tested.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fixtures.cli import run_cli

from locbench.cli import main

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
#: The wells' labels as a lab writes them: names, `;`-separated, any case.
LABELS = ["Nucleoplasm;Cytosol", "mitochondria", "Nucleoplasm", "cytosol;Mitochondria"]


def readme_commands() -> list[list[str]]:
    """The ``locbench`` commands of the section's shell block, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Your own microscope\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README: the 'Your own microscope' section has no ```sh block"
    joined = block.group(1).replace("\\\n", " ")
    commands = [shlex.split(line) for line in joined.splitlines() if line.strip().startswith("locbench ")]
    assert [c[1] for c in commands] == ["data", "train", "predict"]
    return [c[1:] for c in commands]


def make_microscope_folder(root: Path, n: int = 24) -> dict[str, dict[str, np.ndarray]]:
    """``root/my_microscope``: n wells, four 16-bit 80x80 TIFFs each (a distinct brightness per stain), and
    labels.csv; returns well → stain name → pixels."""
    folder = root / "my_microscope"
    folder.mkdir()
    rng = np.random.default_rng(0)
    wells = {}
    for k in range(n):
        well = f"{'ABCD'[k // 6]}{k % 6 + 1:02d}"
        wells[well] = {}
        for level, stain in enumerate(("DAPI", "GFP", "Tubulin", "Calreticulin")):
            pixels = rng.integers(1000 * level, 1000 * level + 500, (80, 80), dtype=np.uint16)
            tifffile.imwrite(folder / f"{well}_{stain}.tif", pixels)
            wells[well][stain] = pixels
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "classes"])
        writer.writerows([well, LABELS[k % len(LABELS)]] for k, well in enumerate(wells))
    return wells


def test_readme_own_microscope_works_the_first_time(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOCBENCH_CACHE", str(tmp_path / "cache"))
    wells = make_microscope_folder(tmp_path)
    info, train, predict = readme_commands()

    code, err = run_cli(capsys, info)
    assert code == 0, err

    code, err = run_cli(capsys, train)
    assert code == 0, err
    run = Path(train[train.index("--out") + 1])
    assert (run / "summary.json").is_file() and (run / "status").read_text().strip() == "done"
    config = (run / "config.yaml").read_text()
    assert "blue: DAPI" in config and "green: GFP" in config and "id_col: image" in config

    code, err = run_cli(capsys, predict)
    assert code == 0, err
    out = Path(predict[predict.index("--out") + 1])
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == list(wells)
    assert all(0.0 <= float(r["p_Nucleoplasm"]) <= 1.0 for r in rows)

    # another microscope's export of the same wells (Hoechst for DAPI, a `well` column): predict's data options
    # describe it over the run's own layout
    other = tmp_path / "other"
    other.mkdir()
    for f in (tmp_path / "my_microscope").glob("*.tif"):
        (other / f.name.replace("_DAPI", "_Hoechst")).write_bytes(f.read_bytes())
    labels = (tmp_path / "my_microscope" / "labels.csv").read_text()
    (other / "labels.csv").write_text(labels.replace("image,classes", "well,classes", 1))
    again = [predict[0], predict[1], "--data", "other/labels.csv", "--out", "other.csv"]
    code, err = run_cli(capsys, again)
    assert code == 2 and "no column 'image'" in err
    code, err = run_cli(capsys, [*again, "--id-col", "well", "--stains", "blue=Hoechst"])
    assert code == 0, err
    with open("other.csv", encoding="utf-8") as f:
        assert list(csv.DictReader(f)) == rows  # the same pixels under other names: the same predictions


def test_readme_data_info_reads_stains_and_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_microscope_folder(tmp_path, n=8)
    info = readme_commands()[0]
    capsys.readouterr()
    assert main([*info, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    stains = summary["sample"]["stains"]
    assert {s: v["file"] for s, v in stains.items()} == {
        "red": "A01_Tubulin.tif",
        "green": "A01_GFP.tif",
        "blue": "A01_DAPI.tif",
        "yellow": "A01_Calreticulin.tif",
    }
    assert stains["green"] == {"file": "A01_GFP.tif", "height": 80, "width": 80, "dtype": "uint16"}
    # 8 wells, labels cycling through LABELS: names read case-insensitively
    assert summary["class_counts"]["Nucleoplasm"] == 4
    assert summary["class_counts"]["Cytosol"] == 4
    assert summary["class_counts"]["Mitochondria"] == 4
