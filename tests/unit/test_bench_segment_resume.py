"""benchmarks/segment_resume.py on a few real full-size fields: segment killed with SIGKILL a third of the way,
then the same command; the masks equal an uninterrupted run's and those finished before the kill are kept."""

from __future__ import annotations

import json

import pytest
from fixtures.benchmarks import load_benchmark


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.usefixtures("real_2021")  # skips without the real 2021 fields
def test_segment_resume_small(tmp_path, capsys):
    mod = load_benchmark("segment_resume")
    out = tmp_path / "r.json"
    # 16 fields: the fewest that segment sends to a worker pool (below that it runs in one process)
    assert mod.main(["--fields", "16", "--workers", "2", "--out", str(out), "--work", str(tmp_path / "w")]) == 0
    res = json.loads(out.read_text())
    assert res["masks"] == 16 and res["identical_to_uninterrupted"]
    assert 5 <= res["masks_at_kill"] < 16 and res["resumed_said_reused"] == res["masks_kept_untouched"]
    assert res["masks_kept_untouched"] >= res["masks_at_kill"] - 4
    assert "identical to the uninterrupted run" in capsys.readouterr().out
