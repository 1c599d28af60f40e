"""Shared fixtures: the real HPA images beside the checkout, and small synthetic datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "hpa-real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real HPA images folder (``../shared/data/hpa-real``); tests that need it skip without it."""
    if not (REAL / "kaggle2018" / "train.csv").exists():
        pytest.skip(f"real HPA images not found at {REAL} (see its README); these tests need them")
    return REAL
