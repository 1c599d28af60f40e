"""Combining per-cell probabilities: blending a cell model's with an image model's, and the Negative rule.

A cell run's probabilities can be blended with an image-level run's: ``p = (1 - w) * p_cell + w * p_field``.
Then the Negative rule: a cell that no localisation class claims is Negative,
``p_neg = max(p_neg, 1 - max_c p_c)`` over the other classes (``none`` leaves the model's own Negative
probability). The documented alternative, multiplying every other class by ``1 - p_neg``, changes the ranking
of the other classes across cells and is not offered.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from locbench.errors import LocbenchError

NEGATIVE_CLASS = "Negative"
NEGATIVE_RULES = ("max", "none")


def apply_negative_rule(probs: np.ndarray, class_names: Sequence[str], *, rule: str = "max") -> np.ndarray:
    """Apply the Negative rule to (N, C) probabilities; a copy is returned.

    Args:
        probs: per-cell probabilities.
        class_names: the C class names; without a ``Negative`` class the rule changes nothing.
        rule: ``max`` (``p_neg = max(p_neg, 1 - max other p)``) or ``none``.
    """
    if rule not in NEGATIVE_RULES:
        raise LocbenchError(f"Negative rule {rule!r}: use one of {', '.join(NEGATIVE_RULES)}")
    out = np.array(probs, dtype=np.float32, copy=True)
    if rule == "none" or NEGATIVE_CLASS not in class_names or out.shape[1] < 2 or not len(out):
        return out
    neg = list(class_names).index(NEGATIVE_CLASS)
    others = np.delete(out, neg, axis=1)
    out[:, neg] = np.maximum(out[:, neg], 1.0 - others.max(axis=1))
    return out


def blend_probs(cell_probs: np.ndarray, field_probs: np.ndarray, *, weight: float) -> np.ndarray:
    """``(1 - weight) * cell_probs + weight * field_probs``; both (N, C), row k the field of cell k."""
    if not 0.0 <= weight <= 1.0:
        raise LocbenchError(f"blend weight {weight} must be in [0, 1]")
    cell_probs, field_probs = np.asarray(cell_probs, np.float32), np.asarray(field_probs, np.float32)
    if cell_probs.shape != field_probs.shape:
        raise LocbenchError(f"cannot blend {cell_probs.shape} cell with {field_probs.shape} field probabilities")
    return ((1.0 - weight) * cell_probs + weight * field_probs).astype(np.float32)
