"""Sweep files: a base configuration, a grid of dotted keys, seeds, exclusions and conditional overrides.

```yaml
name: study
base: ../base.yaml            # optional run-config preset, relative to this file
config: {train: {epochs: 20}} # optional inline base, same shape as a run config
grid:                         # cartesian product of these axes
  model.backbone: [resnet50, efficientnet_b0]
  loss.name: [bce, focal]
seeds: [0, 1, 2]              # each seed sets every key in seed_keys (default train.seed, data.split_seed)
exclude:                      # drop grid points matching all given axis values
  - {model.backbone: resnet50, loss.name: focal}
overrides:                    # where `when` matches, apply `set`
  - when: {model.backbone: efficientnet_b0}
    set: {train.batch_size: 64}
executor: {partition: gpu, gpus_per_node: 1, timeout_min: 600}   # defaults for --executor slurm
```
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locbench.config import EXP_FLOAT, RunConfig, from_dict, merge, read_yaml, set_dotted
from locbench.errors import LocbenchError

SWEEP_KEYS = {"name", "base", "config", "grid", "seeds", "seed_keys", "exclude", "overrides", "executor", "description"}
#: Runs a sweep may have before `locbench sweep` asks for --yes (a typo in a grid can make thousands).
CONFIRM_RUNS = 500
#: Keys that do not change what a run computes: left out of the run id's hash.
NON_RESULT_KEYS = ("data.path", "data.split", "data.workers", "data.cache_dir", "train.device", "log.")


@dataclass(frozen=True)
class Point:
    """One run of a sweep: a grid point (``point_id``, ``axes``) and a seed."""

    run_id: str
    point_id: str
    axes: dict[str, Any]
    seed: int
    config: RunConfig

    def record(self, sweep_name: str) -> dict[str, Any]:
        return {
            "sweep": sweep_name,
            "point_id": self.point_id,
            "axes": self.axes,
            "seed": self.seed,
            "run_id": self.run_id,
            "config": self.config.to_dict(),
        }


@dataclass
class Sweep:
    name: str
    path: Path | None
    grid: dict[str, list[Any]]
    seeds: list[int]
    points: list[Point]
    executor: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def load_sweep(path: str | Path, *, data: str | None = None, extra: dict[str, Any] | None = None) -> Sweep:
    """Read and expand a sweep file; ``data`` and ``extra`` (dotted overrides) apply to every grid point."""
    path = Path(path)
    spec = read_yaml(path)
    return expand(spec, where=str(path), base_dir=path.parent, data=data, extra=extra, path=path)


def expand(
    spec: dict[str, Any],
    *,
    where: str = "sweep",
    base_dir: Path = Path("."),
    data: str | None = None,
    extra: dict[str, Any] | None = None,
    path: Path | None = None,
) -> Sweep:
    """Expand a sweep mapping into one :class:`Point` per grid point and seed; every mistake names the key and file."""
    unknown = sorted(set(spec) - SWEEP_KEYS)
    if unknown:
        raise LocbenchError(
            f"{where}: unknown sweep key(s) {', '.join(unknown)}; valid: {', '.join(sorted(SWEEP_KEYS))}"
        )
    base = RunConfig().to_dict()
    if spec.get("base"):
        merge(base, read_yaml(base_dir / spec["base"]), where=str(base_dir / spec["base"]))
    if spec.get("config"):
        merge(base, spec["config"], where=f"{where}: config")
    if data:
        base["data"]["path"] = data
    for key, value in (extra or {}).items():
        set_dotted(base, key, value)

    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise LocbenchError(f"{where}: grid must map dotted keys to lists of values")
    if not grid:
        raise LocbenchError(
            f"{where}: the grid is empty; give at least one axis, e.g. grid: {{loss.name: [bce, focal]}}"
        )
    for key, values in grid.items():
        _check_key(base, key, f"{where}: grid")
        if not isinstance(values, list) or not values:
            raise LocbenchError(f"{where}: grid axis {key!r} needs a non-empty list of values, got {values!r}")
        _check_distinct(key, values, where)
    seeds = spec.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise LocbenchError(f"{where}: seeds must be a list of integers (or a count), got {seeds!r}")
    seed_keys = spec.get("seed_keys", ["train.seed", "data.split_seed"])
    for key in seed_keys:
        _check_key(base, key, f"{where}: seed_keys")
    _check_not_axis(seed_keys, grid, f"{where}: seed_keys set")
    excludes = spec.get("exclude") or []
    for rule in excludes:
        if not isinstance(rule, dict):
            raise LocbenchError(f"{where}: each exclude entry maps axis keys to values, got {rule!r}")
        for key in rule:
            if key not in grid:
                raise LocbenchError(f"{where}: exclude names {key!r}, which is not a grid axis ({', '.join(grid)})")
    overrides = spec.get("overrides") or []
    for rule in overrides:
        if not isinstance(rule, dict) or set(rule) - {"when", "set"} or "set" not in rule:
            raise LocbenchError(f"{where}: each overrides entry is {{when: {{...}}, set: {{...}}}}, got {rule!r}")
        for key in list(rule.get("when") or {}) + list(rule["set"]):
            _check_key(base, key, f"{where}: overrides")
        _check_not_axis(rule["set"], grid, f"{where}: overrides set")

    name = str(spec.get("name") or (path.stem if path else "sweep"))
    keys = list(grid)
    points: list[Point] = []
    seen: dict[str, tuple] = {}
    for combo in itertools.product(*(grid[k] for k in keys)):
        axes = dict(zip(keys, combo, strict=True))
        if any(all(axes.get(k) == v for k, v in rule.items()) for rule in excludes):
            continue
        for seed in seeds:
            d = json.loads(json.dumps(base))
            for k, v in axes.items():
                set_dotted(d, k, v)
            for rule in overrides:
                when = rule.get("when") or {}
                if all(_get(d, k) == v for k, v in when.items()):
                    for k, v in rule["set"].items():
                        set_dotted(d, k, v)
            for k in seed_keys:
                set_dotted(d, k, seed)
            cfg = _validated(d, where, axes)
            point_id = "-".join(_slug(v) for v in combo)
            run_id = f"{point_id}-s{seed}-{config_hash(cfg)}"
            if run_id in seen:
                raise LocbenchError(
                    f"{where}: two grid points resolve to the same run {run_id}: {seen[run_id]} and {axes}"
                )
            seen[run_id] = (axes, seed)
            points.append(Point(run_id, point_id, axes, seed, cfg))
    if not points:
        raise LocbenchError(f"{where}: every point of the grid is excluded; nothing to run")
    return Sweep(name, path, grid, seeds, points, dict(spec.get("executor") or {}), str(spec.get("description", "")))


def config_hash(cfg: RunConfig) -> str:
    """A short hash of what a configuration computes (paths, devices, workers and loggers left out).

    Only values that differ from the defaults are hashed, so a key added to the configuration in a later version
    (with a default) does not rename the runs of existing sweeps; a run whose saved configuration differs from
    the grid point's anyway is refused at resume with the differing keys named.
    """
    defaults = _flatten(RunConfig().to_dict())
    flat = {
        k: v
        for k, v in _flatten(cfg.to_dict()).items()
        if not k.startswith(NON_RESULT_KEYS) and (k not in defaults or defaults[k] != v)
    }
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:6]


def _validated(d: dict, where: str, axes: dict) -> RunConfig:
    try:
        return from_dict(d)
    except LocbenchError as e:
        raise LocbenchError(f"{where}: grid point {axes}: {e}") from None


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _get(d: dict, key: str) -> Any:
    for part in key.split("."):
        d = d[part]
    return d


def _check_key(base: dict, key: str, where: str) -> None:
    try:
        _get(base, key)
    except (KeyError, TypeError):
        close = difflib.get_close_matches(key, list(_flatten(base)), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LocbenchError(f"{where}: {key!r} is not a config key{hint}") from None


def _check_not_axis(keys, grid: dict, where: str) -> None:
    """A key set after the axes would overwrite an axis value: the point would be named for a value it does not use."""
    clash = [k for k in keys if k in grid]
    if clash:
        raise LocbenchError(
            f"{where} {', '.join(clash)}, which is a grid axis: grid points would be named for values they do not use; "
            "use exclude to drop grid points, or change the axis values"
        )


def _check_distinct(key: str, values: list[Any], where: str) -> None:
    """Refuse an axis that lists one value twice, also in two spellings (``0.001``, ``1e-3``, ``1E-3``, ``1``/``1.0``):
    its grid points would train the same configuration again."""
    groups: dict[str, list[Any]] = {}
    for v in values:
        groups.setdefault(_freeze(v), []).append(v)
    same = [vs for vs in groups.values() if len(vs) > 1]
    if same:
        shown = "; ".join(" = ".join(str(v) for v in vs) for vs in same)
        raise LocbenchError(
            f"{where}: grid axis {key!r} lists a value twice ({shown}); keep one of each, or the same "
            "configuration is trained again under another name"
        )


def _normal(v: Any) -> Any:
    """A value as the configuration will hold it: numbers as floats (an exponent string like 1e-3, which YAML 1.1
    reads as text, too), lists element by element."""
    if isinstance(v, str) and EXP_FLOAT.fullmatch(v.strip()):
        return float(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_normal(x) for x in v]
    if isinstance(v, dict):
        return {k: _normal(x) for k, x in v.items()}
    return v


def _freeze(v: Any) -> str:
    return json.dumps(_normal(v), sort_keys=True)


def _slug(v: Any) -> str:
    s = re.sub(r"[^A-Za-z0-9.]+", "_", str(v)).strip("_")
    return s or "x"
