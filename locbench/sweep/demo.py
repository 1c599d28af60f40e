"""`locbench demo`: the main job end to end on synthetic data — synthesize, sweep, report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from locbench.data.synth import synthesize
from locbench.report import build_report
from locbench.report.explain_section import error_analysis
from locbench.sweep.files import shipped
from locbench.sweep.runner import run_sweep

log = logging.getLogger(__name__)


def run_demo(
    out: str | Path,
    *,
    images: int = 600,
    size: int = 128,
    sweep_file: str | Path | None = None,
    workers: int = 1,
    seed: int = 0,
    explain: bool = True,
) -> Path:
    """Synthesize a dataset into ``out/data`` (kept between calls), run the demo sweep into ``out/sweep`` (resumable)
    and write the report (with the error analysis of the best grid point unless ``explain`` is off); returns the path of
    report.html."""
    out = Path(out)
    t0 = time.perf_counter()
    data = out / "data"
    if not (data / "train.csv").exists():
        log.info("demo 1/3: synthesizing %d HPA-like fields of %d px into %s", images, size, data)
        synthesize(data, images=images, size=size, seed=seed, overwrite=True, workers=max(1, workers))
    else:
        log.info("demo 1/3: reusing the synthetic dataset in %s", data)
    sweep_file = sweep_file or shipped("sweeps/demo.yaml")
    log.info("demo 2/3: running the sweep %s", sweep_file)
    run_sweep(
        sweep_file,
        out / "sweep",
        data=str(data),
        overrides={"data.cache_dir": str(out / "cache")},
        workers=workers,
    )
    log.info("demo 3/3: writing the report")
    extra = []
    if explain:
        extra.append(error_analysis(n=6, localize=24))  # a few images, one method: seconds on a CPU
    report = build_report(out / "sweep", extra_sections=extra)
    log.info("demo finished in %.1f min", (time.perf_counter() - t0) / 60)
    return report
