"""Golden results: a fixed-seed `locbench synth` + `train` + 4-point `sweep` scenario gives exactly the numbers
recorded in tests/fixtures/golden (predictions/val.npz, summary.json, thresholds.json, metrics.jsonl).

A refactor must keep them bit for bit. Regenerate the fixtures (see make_golden.py) only for a change that is meant
to change the numbers, and say so in its commit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.golden.make_golden import ARRAYS, environment, load_golden, run_scenario

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def golden() -> dict:
    recorded, env = load_golden()
    if env != environment():
        # float sums differ bit-wise between torch builds and CPU vector units: only the same setup is comparable
        pytest.skip(f"golden results were recorded with {env}; this machine has {environment()}")
    return recorded


@pytest.fixture(scope="module")
def scenario(golden, tmp_path_factory) -> dict:
    return run_scenario(tmp_path_factory.mktemp("golden"))


def test_same_runs(golden, scenario):
    assert sorted(scenario) == sorted(golden)
    # the sweep's run ids (folder names: a changed id makes a resumed sweep start over)
    assert scenario["sweep-plan"] == golden["sweep-plan"]


@pytest.mark.parametrize("name", sorted(load_golden()[0]))
def test_run_results_are_identical(golden, scenario, name):
    want, got = golden[name], scenario[name]
    if "arrays" in want:
        assert sorted(got["arrays"]) == sorted(ARRAYS)
        for key in ARRAYS:
            a, b = got["arrays"][key], want["arrays"][key]
            assert a.dtype == b.dtype and a.shape == b.shape, key
            assert np.array_equal(a, b), f"{name}: predictions/val.npz[{key}] differs"
    for part in ("summary", "thresholds", "metrics"):
        assert got.get(part) == want.get(part), f"{name}: {part} differs"


def test_fixtures_are_small():
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
    assert sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) < 200_000
