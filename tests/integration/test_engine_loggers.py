"""Optional experiment loggers: TensorBoard event files with the epoch metrics; a clear error without MLflow."""

from __future__ import annotations

import builtins
import importlib.util

import pytest

import locbench
from locbench.errors import LocbenchError

pytest_plugins = ["fixtures.synth_data"]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_event_files_hold_the_epoch_metrics(kit, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = locbench.load_config(overrides=kit.overrides(train__epochs=2, log__tensorboard=True))
    run = locbench.train(cfg, tmp_path / "tb-run")
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/map", "val/macro_f1", "time/epoch_s"} <= tags
    assert [e.step for e in acc.Scalars("val/map")] == [1, 2]


def test_mlflow_missing_is_a_clear_error(kit, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow":
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    cfg = locbench.load_config(overrides=kit.overrides(log__mlflow=True))
    with pytest.raises(LocbenchError, match=r"pip install 'locbench\[loggers\]'"):
        locbench.train(cfg, tmp_path / "mlflow-run")
