"""Golden results: a fixed-seed `locbench synth` + `train` + 4-point `sweep` scenario gives exactly the numbers
recorded in tests/fixtures/golden (predictions/val.npz, summary.json, thresholds.json, metrics.jsonl).

A refactor must keep them bit for bit. Regenerate the fixtures (see make_golden.py) only for a change that is meant
to change the numbers, and say so in its commit.

Deliberate changes since the recording, checked explicitly rather than re-recorded:

- per-class threshold rules (:func:`undo_threshold_rules`): a class with fewer than 3 validation positives keeps
  the 0.5 fallback, one with no positive training example gets 2.0 (never predicted), and summary.json has the keys
  that say so;
- summary.json's tuned F1 (``val.macro_f1_tuned``, ``val.micro_f1_tuned``, per-class ``f1_tuned``) is cross-fitted
  instead of measured on the images the thresholds were tuned on, and the ``val`` block says so (``tuned_f1``,
  ``crossfit_folds``). The recorded in-sample values are still checked exactly, recomputed from the (exactly
  checked) predictions and recorded thresholds; the new values are checked against
  :func:`~locbench.metrics.crossfit_metrics` of the same predictions under the threshold rules;
- the scenario pins ``data.test_frac=0`` (runs hold out a test part by default now), which keeps its splits but,
  being no longer the default, enters the sweep's run-id hashes: the ids are checked to be the recorded ones but
  for that.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from fixtures.golden.make_golden import ARRAYS, environment, load_golden, run_scenario

from locbench.config import DataConfig, load_config
from locbench.metrics import CROSSFIT_FOLDS, compute_metrics, crossfit_metrics
from locbench.sweep.grid import config_hash

pytestmark = pytest.mark.slow

#: Entries of the ``val`` block whose meaning changed on purpose (in-sample -> cross-fitted tuned F1).
CHANGED = ("macro_f1_tuned", "micro_f1_tuned")


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
    assert sorted(k for k in scenario if not k.startswith("_")) == sorted(golden)
    # the sweep's run ids (folder names: a changed id makes a resumed sweep start over). The deliberate change:
    # data.test_frac=0 is no longer the default, so it is part of the hash now; with it at the default, the hash
    # is the recorded one (nothing else about the runs changed)
    got, want = scenario["sweep-plan"]["run_ids"], golden["sweep-plan"]["run_ids"]
    assert [r.rsplit("-", 1)[0] for r in got] == [r.rsplit("-", 1)[0] for r in want]
    default = DataConfig().test_frac
    for run_id, old_id in zip(got, want, strict=True):
        cfg = load_config(scenario["_sweep_dir"] / run_id / "config.yaml")
        assert cfg.data.test_frac == 0 != default
        assert run_id.rsplit("-", 1)[1] == config_hash(cfg) != old_id.rsplit("-", 1)[1]
        assert config_hash(cfg.replace({"data.test_frac": default})) == old_id.rsplit("-", 1)[1]


def _without_tuned(summary: dict) -> dict:
    """``summary`` less the tuned-F1 entries of its ``val`` block and the fields added with cross-fitting."""
    out = copy.deepcopy(summary)
    val = out["val"]
    for key in (*CHANGED, "tuned_f1", "crossfit_folds"):
        val.pop(key, None)
    for row in val["per_class"].values():
        row.pop("f1_tuned")
    return out


@pytest.mark.parametrize("name", sorted(load_golden()[0]))
def test_run_results_are_identical(golden, scenario, name):
    want, got = golden[name], scenario[name]
    if "arrays" in want:
        assert sorted(got["arrays"]) == sorted(ARRAYS)
        for key in ARRAYS:
            a, b = got["arrays"][key], want["arrays"][key]
            assert a.dtype == b.dtype and a.shape == b.shape, key
            assert np.array_equal(a, b), f"{name}: predictions/val.npz[{key}] differs"
    if "summary" in want:
        got = undo_threshold_rules(name, want, got)
    for part in ("thresholds", "metrics"):
        assert got.get(part) == want.get(part), f"{name}: {part} differs"
    if "summary" not in want:
        assert "summary" not in got
        return
    # everything but the tuned F1 exactly as recorded; no test block (the scenario pins data.test_frac=0)
    assert _without_tuned(got["summary"]) == _without_tuned(want["summary"]), f"{name}: summary differs"
    assert "test" not in got["summary"]


@pytest.mark.parametrize("name", [n for n in sorted(load_golden()[0]) if n != "sweep-plan"])
def test_tuned_f1_is_cross_fitted(golden, scenario, name):
    """The deliberate change: the recorded in-sample tuned F1 is what the stored thresholds give on the stored
    validation predictions (bit for bit), and summary.json now holds the cross-fitted F1 in its place."""
    want, got = golden[name], scenario[name]
    probs, targets = got["arrays"]["probs"], got["arrays"]["targets"]
    classes, recorded = want["thresholds"]["classes"], np.asarray(want["thresholds"]["thresholds"])
    in_sample = compute_metrics(probs, targets, class_names=classes, thresholds=recorded)
    old, new = want["summary"]["val"], got["summary"]["val"]
    for key in CHANGED:
        assert in_sample[key.removesuffix("_tuned")] == old[key], key
    for c in classes:
        assert in_sample["per_class"][c]["f1"] == old["per_class"][c]["f1_tuned"], c

    train = np.array([got["summary"]["train_positives"][c] for c in classes])
    crossfit = crossfit_metrics(probs, targets, class_names=classes, train_positives=train)
    assert new["tuned_f1"] == "cross-fitted"
    assert new["crossfit_folds"] == min(CROSSFIT_FOLDS, len(targets))
    for key in CHANGED:
        assert new[key] == crossfit[key.removesuffix("_tuned")], key
    for c in classes:
        assert new["per_class"][c]["f1_tuned"] == crossfit["per_class"][c]["f1"], c
    # the thresholds kept for predict are still tuned on all of validation (under the threshold rules)
    assert [new["per_class"][c]["threshold"] for c in classes] == got["thresholds"]["thresholds"]


def undo_threshold_rules(name: str, want: dict, got: dict) -> dict:
    """Check the deliberate change of the per-class threshold rules against the recorded run, then return ``got``
    with it undone (the recorded thresholds back, the new summary keys removed), so that everything else is still
    compared exactly. (The tuned F1 these thresholds give is cross-fitted now: :func:`test_tuned_f1_is_cross_fitted`.)

    Rules (docs/VALIDATION.md, "Per-class thresholds"): no positive training example -> 2.0 (never predicted);
    fewer than 3 validation positives -> 0.5; else the recorded tuned threshold, unchanged.
    """
    got = copy.deepcopy(got)
    summary, val = got["summary"], got["summary"]["val"]
    targets = want["arrays"]["targets"]
    classes = want["thresholds"]["classes"]
    assert got["thresholds"]["classes"] == classes
    train = summary.pop("train_positives")
    assert list(train) == classes and all(isinstance(k, int) and k >= 0 for k in train.values())
    assert summary.pop("untrainable_classes") == [c for c in classes if train[c] == 0]
    val_pos = targets.sum(axis=0)
    thr = np.array(want["thresholds"]["thresholds"], dtype=np.float64)
    for j, c in enumerate(classes):
        row, old = val["per_class"][c], want["summary"]["val"]["per_class"][c]
        source = row.pop("threshold_source")
        if train[c] == 0:
            assert source == "untrainable" and row["threshold"] == 2.0, (name, c)
            thr[j] = 2.0
        elif val_pos[j] < 3:
            assert source == "fallback" and row["threshold"] == 0.5, (name, c)
            thr[j] = 0.5
        else:
            assert source == "tuned", (name, c)
        row["threshold"] = old["threshold"]
    assert got["thresholds"]["thresholds"] == thr.tolist(), name
    got["thresholds"] = want["thresholds"]
    # the sample-size note: every golden run validates on fewer than 30 fields
    fields = {str(i).split("/")[0] for i in want["arrays"]["ids"]}
    n_fields = val.pop("n_fields")
    assert n_fields == len(fields) < 30, name
    note = val.pop("sample_note")
    assert note.startswith(f"n = {n_fields} fields: too few to rely on"), (name, note)
    rare = int(np.sum((val_pos > 0) & (val_pos < 3)))
    assert (f"{rare} class" in note) == (rare > 0), (name, note)
    return got


def test_fixtures_are_small():
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
    assert sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) < 200_000
