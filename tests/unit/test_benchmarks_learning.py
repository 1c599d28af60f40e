"""The learning check and the backbone cost table run on tiny inputs and report what their docs say."""

from __future__ import annotations

import json

import numpy as np
from fixtures.benchmarks import load_benchmark


def _load(name: str):
    return load_benchmark(name, as_name=f"lead_{name}_under_test")


def test_constant_baseline_by_hand():
    mod = _load("learning_check")
    train = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=np.uint8)  # prevalence 0.5, 0.25
    val = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], dtype=np.uint8)
    r = mod.constant_baseline(train, val, ["a", "b"])
    assert r["map"] == 0.25  # a constant score: AP = validation prevalence (1/4 for both classes)
    # at 0.5: a's score 0.5 predicts all 4 positive (1 TP, 3 FP): F1 = 2/(2+3) = 0.4; b's 0.25 predicts none: 0
    assert np.isclose(r["macro_f1"], 0.2)
    # tuned: each class has 1 validation positive, fewer than the 3 a tuned threshold needs, so both keep the 0.5
    # fallback (docs/VALIDATION.md, "Per-class thresholds") and tuned F1 equals F1 at 0.5
    assert np.isclose(r["macro_f1_tuned"], 0.2)
    # with 3 positives per class the best a constant score can do is all positive: F1 = 2*3/(6+3) = 2/3 for both
    val3 = np.array([[1, 1], [1, 1], [1, 1], [0, 0], [0, 0], [0, 0]], dtype=np.uint8)
    assert np.isclose(mod.constant_baseline(train, val3, ["a", "b"])["macro_f1_tuned"], 2 / 3)


def test_learning_check_tiny(tmp_path, capsys):
    rec = _load("learning_check").main(
        ["--out", str(tmp_path), "--images", "24", "--size", "64", "--epochs", "1", "--backbone", "test_resnet"]
    )
    assert set(rec["results"]) == {
        "locbench (rgby, tuned thresholds)",
        "study settings (green, 0.5 threshold)",
        "constant prevalence baseline",
    }
    assert json.loads((tmp_path / "learning_check.json").read_text())["n_val"] == rec["n_val"]
    assert "constant prevalence baseline" in capsys.readouterr().out


def test_backbone_costs_tiny(tmp_path):
    rows = _load("backbone_costs").main(
        [
            "--models",
            "test_resnet",
            "--size",
            "32",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "c.json"),
        ]
    )
    assert rows[0]["backbone"] == "test_resnet" and rows[0]["params_m"] > 0 and rows[0]["gmacs"] > 0
    assert rows[0]["img_per_s"] > 0
