"""benchmarks/scale_cells.py runs end to end in --quick mode and writes the JSON its docs describe."""

from __future__ import annotations

import json

import pytest
from fixtures.benchmarks import load_benchmark


@pytest.mark.slow
def test_scale_cells_quick(tmp_path, capsys):
    mod = load_benchmark("scale_cells")
    out = tmp_path / "scale_cells.json"
    returned = mod.main(["--quick", "--root", str(tmp_path / "work"), "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    (res,) = written["results"]
    assert res["n_fields"] == 16 and res["source"].startswith("synthetic")
    for step in ("segment", "crops"):
        assert [r["workers"] for r in res[step]] == [1, 2]
        for r in res[step]:
            assert r["fields_per_s"] == pytest.approx(16 / r["wall_s"]) and r["peak_pss_mb"] > 0
            assert r["walls_s"] == [r["wall_s"]] and r["sampler_cpu_s"] >= 0  # one pass each (--repeats 1)
        assert res[f"{step}_speedup_1_to_2"]["wall"] > 0
    assert res["crops"][0]["cells"] > 0
    assert not list((tmp_path / "work").glob("out-*"))  # outputs removed after each pass
    assert "| segment | 16 | 2 |" in capsys.readouterr().out
