"""locbench: benchmark and run deep-learning pipelines for protein localization on HPA-style images.

The Python API mirrors the command line and works from a notebook::

    import locbench
    cfg = locbench.load_config(overrides={"data.path": "data/", "model.backbone": "resnet18"})
    run_dir = locbench.train(cfg, "runs/r18")
    run = locbench.load_run(run_dir)
    locbench.evaluate(run_dir, split="val")
    locbench.predict(run_dir, data="new_images/", out="preds.csv")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# name → module; imported on first use so that `import locbench` (and the CLI's --help) stays fast
_API = {
    "load_config": "locbench.config",
    "RunConfig": "locbench.config",
    "train": "locbench.engine.fit",
    "load_run": "locbench.infer",
    "evaluate": "locbench.infer",
    "predict": "locbench.infer",
    "load_table": "locbench.data.formats",
    "build_cache": "locbench.data.cache",
    "synthesize": "locbench.data.synth",
    "run_sweep": "locbench.sweep.runner",
    "build_report": "locbench.report",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'locbench' has no attribute {name!r}")
