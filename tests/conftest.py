"""Shared fixtures: the real HPA images beside the checkout, and small synthetic datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run two at a time (pytest -n 2) on 2 cores: one intra-op thread each. More threads than cores makes
# OpenMP spin-wait, which was measured here to slow a tiny model's training step ten times.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "hpa-real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real HPA images folder (``../shared/data/hpa-real``); tests that need it skip without it."""
    if not (REAL / "kaggle2018" / "train.csv").exists():
        pytest.skip(f"real HPA images not found at {REAL} (see its README); these tests need them")
    return REAL


@pytest.fixture(scope="session")
def real_2021() -> Path:
    """The real Kaggle 2021 fields with their masks (``../shared/data/hpa-real/kaggle2021``), which the dataset-scale
    benchmarks hard-link into large farms; tests that need them skip without them."""
    if not (REAL / "kaggle2021" / "train.csv").is_file():
        pytest.skip(f"needs the real 2021 fields in {REAL / 'kaggle2021'} (see its README)")
    return REAL / "kaggle2021"


#: Test files that share one expensive service per test session: under ``pytest -n 2 --dist loadgroup`` (the
#: Makefile's) each file's tests go to one worker, so that the service is started once, not once per worker.
#: (xdist's own ``xdist_group`` mark does not group under pytest 9 here: its node-id suffix is lost.)
SHARED_SERVICE_FILES = {
    "tests/integration/test_slurm_cluster.py": "slurm",
    "tests/integration/test_mlflow_tracking.py": "mlflow",
}


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SharedServiceScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SHARED_SERVICE_FILES.get(nodeid.split("::", 1)[0]) or super()._split_scope(nodeid)

    return SharedServiceScheduling(config, log)
