"""Seeding. Every source of randomness in an epoch is derived from (seed, epoch), so a run resumed at an epoch
boundary draws the same numbers as an uninterrupted one without saving generator states."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any parts, stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Deterministic kernels where torch has them (warn instead of failing where it has not)."""
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = not enabled
        # cuBLAS needs this for deterministic matmuls; only set if the user has not chosen a value
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
