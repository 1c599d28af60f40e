"""When a number rests on too few samples to rely on: the note printed beside it.

A mean over fewer than :data:`MIN_RELIABLE_N` (30) fields moves by a large fraction of its range when one field
changes, and an average precision or F1 of a class with one or two positives is 0, 1 or a coin flip. The note
says so next to the number (``val mAP 1.0000 (n = 1 field: too few to rely on)``) instead of letting it pass as
a result.
"""

from __future__ import annotations

import numpy as np

from locbench.metrics.thresholds import MIN_TUNE_POSITIVES

#: Fewest evaluated fields (images) a headline number needs before it is shown without a warning.
MIN_RELIABLE_N = 30
#: Fewest positives a class needs before its own numbers count (the same bar as tuning its threshold).
MIN_CLASS_POSITIVES = MIN_TUNE_POSITIVES


def small_sample_note(n: int, positives: np.ndarray | None = None, *, unit: str = "field") -> str | None:
    """A warning for a number measured on ``n`` ``unit``\\s with per-class ``positives``; None when none applies.

    Classes with no positive are left out of the averages, so only classes with 1 to
    ``MIN_CLASS_POSITIVES - 1`` positives are counted as rare.
    """
    notes = []
    if n < MIN_RELIABLE_N:
        notes.append(f"n = {n} {unit}{'' if n == 1 else 's'}: too few to rely on")
    if positives is not None:
        pos = np.asarray(positives)
        rare = int(np.sum((pos > 0) & (pos < MIN_CLASS_POSITIVES)))
        if rare:
            notes.append(f"{rare} class{'' if rare == 1 else 'es'} with fewer than {MIN_CLASS_POSITIVES} positives")
    return "; ".join(notes) or None


def with_note(text: str, note: str | None) -> str:
    """``text`` with ``note`` in parentheses after it, when there is one."""
    return f"{text} ({note})" if note else text
