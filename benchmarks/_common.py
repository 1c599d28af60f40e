"""Helpers shared by the benchmark scripts: host description, machine load, timing, tables, JSON output."""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from locbench.engine.callbacks import Callback
from locbench.tables import markdown_table, text_table

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "out"
REAL = REPO.parent / "shared" / "data" / "hpa-real"


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where /proc is absent): the CPU is shared, so say how busy."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def host() -> dict[str, Any]:
    """What the numbers were measured on."""
    import cv2
    import numpy as np

    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "machine": platform.machine(),
        "loadavg": loadavg(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Best (least disturbed by other processes) and all wall times of ``repeats`` calls of ``fn``."""
    times = [timed(fn) for _ in range(repeats)]
    return min(times), times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write the benchmark's result atomically (other tools read benchmarks/out)."""
    from locbench.store.atomic import atomic_write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, obj)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, markdown: bool = False) -> str:
    """A plain-text (or markdown) table; floats are printed with 3 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:  # nan
                return "-"
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return "-" if v is None else str(v)

    body = [[cell(v) for v in r] for r in rows]
    return markdown_table(headers, body, left=None) if markdown else text_table(headers, body)


def over_seeds(per_seed: dict[int, float]) -> dict[str, Any]:
    """A configuration's score over seeds: its mean with a Student-t 95% interval, and the scores by seed."""
    from locbench.report.stats import t_interval

    e = t_interval(list(per_seed.values()))
    return {"mean": e.mean, "lo": e.lo, "hi": e.hi, "per_seed": per_seed}


def paired_over_seeds(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """``b - a`` paired by seed: the mean difference, its Student-t 95% interval, p and the pairs."""
    from locbench.report.stats import paired_t

    n, diff, lo, hi, p = paired_t(a, b)
    return {"mean": diff, "lo": lo, "hi": hi, "p": p, "n": n}


def ci_text(e: dict[str, Any]) -> str:
    """``mean [lo, hi]`` of :func:`over_seeds` or :func:`paired_over_seeds`, 3 decimals."""
    return f"{e['mean']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]"


def load_module(path: Path, name: str):
    """Import a file that is not part of a package (e.g. tests/report_fixtures.py) by its path."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def children_cpu_s() -> float:
    """CPU seconds (user + system) used so far by the live child processes of this one (loader workers).

    On a shared machine wall time depends on everybody else's load; CPU time is the work this program did.
    Linux only (reads /proc); 0.0 elsewhere.
    """
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    try:
        kids = set()
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            kids.update((task / "children").read_text().split())
        for pid in kids:
            # fields after the ")" that closes the command name: state is field 3, utime 14, stime 15
            rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
    except OSError:
        return 0.0
    return total / tick


class Clock:
    """Wall, own CPU and children's CPU seconds of a block: ``with Clock() as c: ...; c.wall, c.cpu``, or
    ``c.start()`` ... ``c.stop()`` (which returns them as a dict)."""

    def __enter__(self) -> Clock:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Clock:
        self._w, self._c, self._k = time.perf_counter(), time.process_time(), children_cpu_s()
        return self

    def stop(self) -> dict[str, float]:
        self.wall = time.perf_counter() - self._w
        self.cpu_self = time.process_time() - self._c
        self.cpu_children = max(0.0, children_cpu_s() - self._k)
        self.cpu = self.cpu_self + self.cpu_children
        return {"wall": self.wall, "cpu": self.cpu, "cpu_children": self.cpu_children}


class EpochTimer(Callback):
    """Follows the real training loop (``train(..., callbacks=[timer])``) and clocks each epoch's training steps
    (``train``) and validation pass (``evaluate``): one ``{wall, cpu, cpu_children}`` per epoch."""

    def __init__(self) -> None:
        self.train: list[dict[str, float]] = []
        self.evaluate: list[dict[str, float]] = []
        self._clock = Clock()

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._clock.start()

    def on_train_epoch_end(self, trainer, epoch: int, loss: float, seen: int) -> None:
        self.train.append(self._clock.stop())

    def on_validation_start(self, trainer, epoch: int) -> None:
        self._clock.start()

    def on_validation_end(self, trainer, epoch: int, val: dict) -> None:
        self.evaluate.append(self._clock.stop())


def link_fields(source: Path, out: Path, *, total: int, masks: bool = False) -> Path:
    """The kaggle2021-layout dataset ``source`` grown to ``total`` fields in ``out``: its fields hard-linked
    under new ids ``<id>-<k>`` (and their ``masks/{id}_predictedmask.png`` too, with ``masks``), cycling
    through its rows. Decoding and segmenting cost the same per file whether or not files share their bytes.

    Incremental: links that exist are kept, so a dataset of 2,000 grows from one of 500.
    """
    lines = (source / "train.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    (out / "train").mkdir(parents=True, exist_ok=True)
    if masks:
        (out / "masks").mkdir(parents=True, exist_ok=True)
    out_rows = []
    for k in range(total):
        fid, label = rows[k % len(rows)].split(",", 1)
        new = f"{fid}-{k:05d}"
        files = [(f, out / "train") for f in (source / "train").glob(f"{fid}_*.png")]
        mask = source / "masks" / f"{fid}_predictedmask.png"
        if masks and mask.is_file():
            files.append((mask, out / "masks"))
        for f, folder in files:
            target = folder / f.name.replace(fid, new)
            if not target.exists():
                os.link(f, target)
        out_rows.append(f"{new},{label}")
    (out / "train.csv").write_text("\n".join([header, *out_rows]) + "\n")
    return out


def linked_dataset(out: Path, *, unique: int, total: int, size: int, workers: int = 1, edition: str = "2021") -> Path:
    """A synthetic dataset of ``total`` fields made of ``unique`` drawn ones (hard links: cheap to make).

    Decoding costs the same per file whether or not files share their bytes, so a large dataset for timing
    caches and loaders need not be drawn field by field.
    """
    from locbench.data.synth import synthesize

    src = out / "unique"
    synthesize(src, images=unique, size=size, edition=edition, seed=0, workers=workers, overwrite=True)
    return link_fields(src, out / "data", total=total)


def real_farm(out: Path, *, total: int, source: Path | None = None, masks: bool = True) -> Path:
    """A kaggle2021-layout dataset of ``total`` real full-size fields: the real 2021 fields (``REAL/kaggle2021``,
    2048-3072 px, four stains) hard-linked under new ids ``<id>-<k>``, with their HPA masks under ``masks/`` when
    ``masks`` (:func:`link_fields`)."""
    source = source or REAL / "kaggle2021"
    if not (source / "train.csv").is_file():
        raise FileNotFoundError(f"no real fields at {source} (see ../shared/data/hpa-real/README.md)")
    return link_fields(source, out, total=total, masks=masks)
