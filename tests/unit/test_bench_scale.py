"""benchmarks/bench_scale.py in its --quick mode: cache and predict over a few real full-size fields, measured
against the bare decoder and the bare model in the same run, with the JSON the docs quote."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures.benchmarks import load_benchmark


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.usefixtures("real_2021")  # skips without the real 2021 fields
def test_bench_scale_quick(tmp_path, capsys):
    mod = load_benchmark("bench_scale")
    threads = torch.get_num_threads()
    try:
        assert mod.main(["--quick", "--out", str(tmp_path / "s.json"), "--work", str(tmp_path / "w")]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["settings"]["fields"] == [4, 12] and res["settings"]["workers"] == [2] and "cells" in res
    assert res["bare_decode"]["fields"] == 12 and res["bare_decode"]["wall_s"] > 0
    assert res["bare_forward"]["fields"] == 12 and res["bare_forward"]["wall_s"] > 0
    steps = [(r["step"], r["workers"], r["fields"]) for r in res["commands"]]
    assert steps == [("cache", 2, 12), ("predict", 2, 4), ("predict", 2, 12)]
    for r in res["commands"]:
        # each measured with real memory; the cache decodes in its own process below 128 fields
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["peak_pss_mb"] > 50
        assert r["processes"] >= (2 if r["step"] == "predict" else 1)  # predict: its loader workers were seen
    assert all(r["loop_s"] and 0 < r["loop_s"] < r["wall_s"] for r in res["commands"] if r["step"] == "predict")
    t = res["targets"]["predict_w2"]
    assert t["wall_over_bare_sum"] > 0 and t["peak_pss_ratio_largest_over_smallest"] > 0
    out = capsys.readouterr().out
    assert "wall / (bare forward + bare decode)" in out and "| predict | 2 | 12 |" in out
    # each predict wrote one row per field into the work folder
    assert (tmp_path / "w" / "pred_12_w2.csv").read_text().count("\n") == 13
    # killed a third of the way, the same command continued from the batches kept and wrote the same bytes
    kill = res["kill_resume"]
    assert kill["same_bytes"] and 4 <= kill["killed_with_rows"] <= kill["resumed_from"] < 12
