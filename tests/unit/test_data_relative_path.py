"""A dataset given as a relative path (the README's examples) loads from any working directory."""

import os
from pathlib import Path

from locbench.data.formats import load_table

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hpa2018_tiny"


def test_relative_dataset_path(tmp_path, monkeypatch):
    monkeypatch.chdir(FIXTURE.parent.parent)
    table = load_table(os.path.join("fixtures", "hpa2018_tiny"))
    assert len(table) == 3
    assert all(p.exists() for p in table.paths(0).values())
    assert table.image_dir == Path("fixtures/hpa2018_tiny/train")
