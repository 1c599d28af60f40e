"""Fixtures the reliability tests share: private copies of the session's synthetic dataset and finished run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def dataset(kit, tmp_path) -> Path:
    """A private copy of the session's synthetic dataset (48 fields, 64 px), to damage."""
    out = tmp_path / "data"
    shutil.copytree(kit.data, out)
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the session's finished run folder (without checkpoints and outputs), to damage."""
    out = tmp_path / "run"
    shutil.copytree(trained_run, out, ignore=shutil.ignore_patterns("epoch-*", "eval", "explain"))
    return out
