"""Fixtures the reliability tests share: private copies of the session's synthetic dataset and finished run, and
the check that a command changed no file outside the folder it writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fixtures.hashes import Untouched


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


@pytest.fixture
def untouched(tmp_path, monkeypatch) -> Untouched:
    """Watches the current folder (an empty one: a command that writes there by mistake is caught) from the start;
    a test adds the dataset and its input files with ``untouched.watch(...)`` and calls ``untouched.check()`` after
    the command. Checked once more when the test ends."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    watched = Untouched().watch(cwd)
    yield watched
    watched.check()
