"""The configuration files shipped with locbench (configs/ at the repository root)."""

from __future__ import annotations

from pathlib import Path

from locbench.errors import LocbenchError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def shipped_configs() -> list[Path]:
    """Every YAML file under configs/ (run presets and sweeps)."""
    return sorted(CONFIG_DIR.rglob("*.yaml"))


def shipped(name: str) -> Path:
    """A shipped file by relative path, e.g. ``sweeps/demo.yaml``."""
    path = CONFIG_DIR / name
    if not path.is_file():
        raise LocbenchError(f"shipped config {name} not found in {CONFIG_DIR}")
    return path
