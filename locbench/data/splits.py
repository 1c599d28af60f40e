"""Seeded multi-label stratified splits (train/val[/test] or k-fold), saved as JSON and reused by name.

Stratification is iterative stratification (Sechidis et al. 2011) from the ``iterative-stratification``
package, which keeps every class's proportion close across parts even for rare classes and label combinations.
With a group column (e.g. antibody), groups are split instead of fields: a group's label vector is the union of
its fields' labels, and every field follows its group, so no group straddles two parts.

Part sizes come out within about 10% of the requested fraction: the stratifier trades a few fields of size for
per-class balance (every class's share of a part stays within a few points of the fraction).

A test part (``test_frac`` > 0, 0.2 by default in run configurations) is split off first and holds at least
:data:`MIN_TEST` units (fields, or groups): below that a test F1 moves in steps too coarse to compare anything.
A dataset too small to keep the training part at least as large as the test part is refused with the counts and
the way out (``data.test_frac=0``: no test part; see docs/VALIDATION.md for what that costs).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

from locbench.data.formats import Table
from locbench.errors import BadInputError, LocbenchError
from locbench.store.atomic import atomic_write_json

log = logging.getLogger(__name__)

SPLIT_VERSION = 1
PARTS = ("train", "val", "test")
#: The fewest units (fields, or groups with a group column) a test part holds, whatever ``test_frac`` asks.
MIN_TEST = 5


@dataclass
class Split:
    """Which field ids go to which part, and how that was decided.

    Attributes:
        seed: random seed of the stratifier.
        method: ``stratified`` (shuffle split) or ``kfold``.
        fractions: requested ``val`` and ``test`` fractions (k-fold: val is 1/k of what remains after test).
        parts: part name (``train``, ``val``, optionally ``test``) → field ids, in table order.
        kfold: number of folds (k-fold only).
        fold: which fold is ``val`` (k-fold only).
        group_col: column whose groups were kept together, if any.
        source: the table it was made from (csv, format, number of fields), for the record.
    """

    seed: int
    method: str
    fractions: dict[str, float]
    parts: dict[str, list[str]]
    kfold: int | None = None
    fold: int | None = None
    group_col: str | None = None
    source: dict = field(default_factory=dict)

    def indices(self, table: Table, part: str) -> np.ndarray:
        """Row indices of ``part``'s fields in ``table`` (raises if some id is not in it)."""
        if part not in self.parts:
            raise LocbenchError(f"split has no part {part!r}; it has {', '.join(self.parts)}")
        row = {fid: i for i, fid in enumerate(table.ids)}
        missing = [fid for fid in self.parts[part] if fid not in row]
        if missing:
            raise BadInputError(
                f"{len(missing)} ids of split part {part!r} are not in the table {table.csv_path}",
                missing,
                fix="make the split from this dataset (locbench split --data ...) or load the dataset it was made for",
            )
        return np.array([row[fid] for fid in self.parts[part]], dtype=np.int64)


def make_split(
    table: Table,
    *,
    seed: int,
    val_frac: float = 0.2,
    test_frac: float = 0.0,
    group_col: str | None = None,
    kfold: int | None = None,
    fold: int | None = None,
) -> Split:
    """Split ``table`` into train/val(/test), stratified over all classes at once.

    Args:
        table: the fields.
        seed: the same seed on the same table gives the same split.
        val_frac: fraction for validation (ignored with ``kfold``).
        test_frac: fraction held out as test first, at least :data:`MIN_TEST` units (0: no test part).
        group_col: keep fields of one group together (``table.groups`` if the table was loaded with this
            column, else the column is read from the CSV).
        kfold: split what remains after test into this many folds...
        fold: ...and use fold ``fold`` (0-based) as val.

    Returns:
        The split (save it with :func:`save_split`).
    """
    _check_fractions(val_frac, test_frac, kfold, fold)
    if group_col:
        groups = table.groups if table.group_col == group_col and table.groups is not None else table.column(group_col)
        unit_names, unit_of_row = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        y = np.zeros((len(unit_names), table.num_classes), dtype=np.uint8)
        np.maximum.at(y, unit_of_row, table.targets)
    else:
        unit_of_row = np.arange(len(table))
        y = table.targets
    n_units = len(y)
    units = np.arange(n_units)
    unit_part: dict[str, np.ndarray] = {}
    unit_word = "groups" if group_col else "fields"
    n_test = _test_size(n_units, val_frac, test_frac, kfold, unit_word) if test_frac > 0 else 0

    try:
        rest = units
        if n_test:
            rest, test = _shuffle_split(MultilabelStratifiedShuffleSplit, y, units, n_test, seed)
            unit_part["test"] = test
        if kfold:
            folds = MultilabelStratifiedKFold(n_splits=kfold, shuffle=True, random_state=seed)
            train_pos, val_pos = list(folds.split(np.zeros(len(rest)), y[rest]))[fold]
            unit_part["train"], unit_part["val"] = rest[train_pos], rest[val_pos]
        elif n_test:  # the share of the whole table, counted as scikit-learn counts a fraction (rounded up)
            unit_part["train"], unit_part["val"] = _shuffle_split(
                MultilabelStratifiedShuffleSplit, y[rest], rest, math.ceil(val_frac * n_units), seed
            )
        else:
            rel_val = val_frac / (1.0 - test_frac)
            unit_part["train"], unit_part["val"] = _shuffle_split(
                MultilabelStratifiedShuffleSplit, y[rest], rest, rel_val, seed
            )
    except ValueError as e:  # scikit-learn's checks: too few samples for the fractions or folds
        raise LocbenchError(
            f"cannot split {n_units} {'groups' if group_col else 'fields'} this way ({e}); use more data, "
            "other fractions or fewer folds"
        ) from None

    parts: dict[str, list[str]] = {}
    for name in PARTS:
        if name not in unit_part:
            continue
        in_part = np.zeros(n_units, dtype=bool)
        in_part[unit_part[name]] = True
        rows = np.flatnonzero(in_part[unit_of_row])
        if len(rows) == 0:
            raise LocbenchError(
                f"split part {name!r} would be empty ({len(table)} fields, {n_units} "
                f"{'groups' if group_col else 'fields'} to split); use a larger fraction or more data"
            )
        parts[name] = [table.ids[i] for i in rows]
    split = Split(
        seed=int(seed),
        method="kfold" if kfold else "stratified",
        fractions={"val": (1.0 - test_frac) / kfold if kfold else val_frac, "test": test_frac},
        parts=parts,
        kfold=kfold,
        fold=fold,
        group_col=group_col,
        source={"csv": str(table.csv_path), "format": table.format, "num_fields": len(table)},
    )
    log.info("split %s: %s", split.method, ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    return split


def make_config_split(dcfg, table: Table) -> Split:
    """:func:`make_split` of ``table`` with the settings of a data configuration (:class:`~locbench.config.DataConfig`:
    ``split_seed``, ``val_frac``, ``test_frac``, ``group_col``)."""
    return make_split(
        table, seed=dcfg.split_seed, val_frac=dcfg.val_frac, test_frac=dcfg.test_frac, group_col=dcfg.group_col
    )


def resolve_split(dcfg, table: Table, split_file: Path) -> dict[str, np.ndarray]:
    """Split part → table indices: the split file the config names, else the run's own ``split_file`` (a resumed
    run keeps its split), else a new stratified split from ``data.split_seed``, saved to ``split_file``."""
    if dcfg.split:
        split = load_split(dcfg.split, table)
    elif split_file.exists():
        split = load_split(split_file, table)
    else:
        split = make_config_split(dcfg, table)
    if not split_file.exists():
        save_split(split, split_file)
    return {part: split.indices(table, part) for part in split.parts}


def _test_size(n_units: int, val_frac: float, test_frac: float, kfold: int | None, unit_word: str) -> int:
    """Units in the test part: ``test_frac`` of them (rounded up), at least :data:`MIN_TEST`; raises when what is
    left cannot hold a validation part and a training part at least as large as the test part."""
    n_test = max(math.ceil(test_frac * n_units - 1e-9), MIN_TEST)
    n_val = math.ceil((n_units - n_test) / kfold) if kfold else math.ceil(val_frac * n_units - 1e-9)
    n_train = n_units - n_test - n_val
    if n_val < 1 or n_train < max(n_test, 2):
        raise LocbenchError(
            f"{n_units} {unit_word} are too few for three parts: a test part needs at least {MIN_TEST} "
            f"({n_test} here at data.test_frac={test_frac:g}), validation {max(n_val, 0)}, which leaves "
            f"{max(n_train, 0)} for training, fewer than the test part; add data, or run without a test part: "
            "--set data.test_frac=0 (nothing is then measured on images held out from every choice: tuned "
            "thresholds are cross-fitted on validation, and the checkpoint is still picked on validation; "
            "see docs/VALIDATION.md)"
        )
    return n_test


def _shuffle_split(
    cls, y: np.ndarray, units: np.ndarray, size: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified shuffle split of ``units``: (kept, held out); ``size`` is the held-out fraction or count."""
    splitter = cls(n_splits=1, test_size=size, random_state=seed)
    keep, held = next(splitter.split(np.zeros(len(units)), y))
    return units[np.sort(keep)], units[np.sort(held)]


def _check_fractions(val_frac: float, test_frac: float, kfold: int | None, fold: int | None) -> None:
    if not 0.0 <= test_frac < 1.0:
        raise LocbenchError(f"test fraction {test_frac} must be in [0, 1)")
    if kfold is not None:
        if kfold < 2:
            raise LocbenchError(f"--kfold {kfold}: need at least 2 folds")
        if fold is None or not 0 <= fold < kfold:
            raise LocbenchError(f"--fold {fold}: give a fold index from 0 to {kfold - 1}")
    elif not (0.0 < val_frac < 1.0 and val_frac + test_frac < 1.0):
        raise LocbenchError(f"val fraction {val_frac} (+ test {test_frac}) must be in (0, 1) and leave a train part")


def save_split(split: Split, path: str | os.PathLike) -> Path:
    """Write ``split`` as JSON (atomically)."""
    return atomic_write_json(path, {"format_version": SPLIT_VERSION, **asdict(split)})


def load_split(path: str | os.PathLike, table: Table | None = None) -> Split:
    """Read a split file; with ``table``, check that every id is in it.

    Raises:
        LocbenchError: the file is missing or not a split.
        BadInputError: ids of the split are not in ``table`` (all listed).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("format_version", None)
        split = Split(**data)
    except FileNotFoundError:
        raise LocbenchError(f"{path}: split file not found; make one with `locbench split`") from None
    except (json.JSONDecodeError, TypeError) as e:
        raise LocbenchError(f"{path}: not a locbench split file ({e}); make one with `locbench split`") from None
    seen: set[str] = set()
    for part, ids in split.parts.items():
        twice = sorted(fid for fid, n in Counter(ids).items() if n > 1)
        if twice:  # read as is, they would be sampled twice as often (and scored twice)
            raise BadInputError(f"{path}: part {part!r} lists ids more than once", twice, "list each id once")
        overlap = seen.intersection(ids)
        if overlap:
            raise BadInputError(f"{path}: ids appear in more than one part", sorted(overlap), "remake the split")
        seen.update(ids)
    if table is not None:
        known = set(table.ids)
        missing = [fid for ids in split.parts.values() for fid in ids if fid not in known]
        if missing:
            raise BadInputError(
                f"{path}: {len(missing)} ids of the split are not in the dataset {table.csv_path}",
                missing,
                fix="use the split made for this dataset, or make a new one with `locbench split --data ...`",
            )
    return split


def split_summary(split: Split, table: Table) -> dict[str, dict]:
    """Per part: number of fields and per-class counts (for ``locbench split`` and reports)."""
    out = {}
    for part in split.parts:
        idx = split.indices(table, part)
        counts = table.targets[idx].sum(axis=0)
        out[part] = {
            "num_fields": len(idx),
            "class_counts": {c: int(n) for c, n in zip(table.scheme.classes, counts, strict=True)},
        }
    return out
