"""benchmarks/scale_cells.py runs end to end in --quick mode and writes the JSON its docs describe."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "scale_cells.py"


@pytest.mark.slow
def test_scale_cells_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("scale_cells_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
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
        assert res[f"{step}_speedup_1_to_2"]["wall"] > 0
    assert res["crops"][0]["cells"] > 0
    assert not list((tmp_path / "work").glob("out-*"))  # outputs removed after each pass
    assert "| segment | 16 | 2 |" in capsys.readouterr().out
