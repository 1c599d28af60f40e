"""The configuration files shipped with locbench (run presets and sweeps in the package's configs/ folder)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from locbench.errors import LocbenchError


def config_dir() -> Path:
    """The folder of the shipped YAML files, inside the installed package (a wheel carries it as package data).

    A sweep file names its base preset by a relative path (``base: ../base.yaml``), so the files must be real files
    on disk, which they are for every install but a zipped one.
    """
    folder = resources.files("locbench") / "configs"
    if not isinstance(folder, Path):
        raise LocbenchError(f"locbench's shipped configs are not on the file system ({folder}); install it unzipped")
    return folder


#: The folder of the shipped YAML files (see :func:`config_dir`).
CONFIG_DIR = config_dir()


def shipped_configs() -> list[Path]:
    """Every shipped YAML file (run presets and sweeps)."""
    return sorted(CONFIG_DIR.rglob("*.yaml"))


def shipped(name: str) -> Path:
    """A shipped file by relative path, e.g. ``sweeps/demo.yaml``."""
    path = CONFIG_DIR / name
    if not path.is_file():
        raise LocbenchError(f"shipped config {name} not found in {CONFIG_DIR}")
    return path
