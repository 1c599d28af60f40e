"""Label tables: the Kaggle 2021 and 2018 layouts and a generic CSV layout, read into one :class:`Table`.

A dataset folder holds ``train.csv`` and ``train/`` with one image per stain and field. Problems found in the
CSV or on disk are collected over all rows and raised once as a :class:`BadInputError` (or the offending rows
are dropped with ``skip_bad=True``), so a user fixes everything in one go instead of one error per run.
Images are only checked for existence here (one directory listing per folder); decoding problems surface when
fields are read or cached.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from locbench.data.channels import STAINS, check_stain_names
from locbench.data.images import ImageReadError, StainFile, read_field_stains
from locbench.data.schemes import SCHEMES, ClassScheme, get_scheme
from locbench.errors import BadInputError, LocbenchError

log = logging.getLogger(__name__)

#: Extensions tried, in order, for ``{ext}`` in a pattern (Kaggle 2018 ships PNGs and full-size TIFFs).
IMAGE_EXTS = (".png", ".tif", ".tiff")
DEFAULT_PATTERN = "{id}_{channel}{ext}"


@dataclass(frozen=True)
class FormatSpec:
    """Column names, label separator and class scheme of one CSV layout."""

    name: str
    id_col: str
    label_col: str
    label_sep: str | None  # None: any run of whitespace
    scheme: str


FORMATS = {
    "kaggle2021": FormatSpec("kaggle2021", "ID", "Label", "|", "hpa2021"),
    "kaggle2018": FormatSpec("kaggle2018", "Id", "Target", None, "hpa2018"),
}


@dataclass
class Table:
    """Field ids, multi-hot targets and where each field's stain images live.

    Attributes:
        root: the dataset folder.
        format: ``kaggle2021``, ``kaggle2018`` or ``generic``.
        scheme: the class scheme; ``targets`` columns follow ``scheme.classes``.
        ids: field ids, in CSV order (bad rows dropped when loaded with ``skip_bad``).
        targets: (N, C) uint8 multi-hot.
        groups: (N,) group labels (e.g. antibody) when loaded with ``group_col``, else None.
        image_dir: folder the pattern is relative to.
        pattern: file pattern with ``{id}``, optionally ``{channel}`` (one file per stain; without it, one
            multi-channel file per field) and ``{ext}``.
        exts: per-field extension filling ``{ext}`` (None when the pattern has none).
        stains: the stains this dataset has.
        stain_names: stain → the user's name for it (``data.stains``): the ``{channel}`` value of the pattern, or
            the channel (OME name or index) in a multi-channel file.
        csv_path: the label CSV.
        id_col: its id column (to read further columns with :meth:`column`).
        group_col: the column ``groups`` came from.
    """

    root: Path
    format: str
    scheme: ClassScheme
    ids: list[str]
    targets: np.ndarray
    groups: np.ndarray | None = None
    image_dir: Path = field(default_factory=Path)
    pattern: str = DEFAULT_PATTERN
    exts: list[str] | None = None
    stains: tuple[str, ...] = STAINS
    stain_names: Mapping[str, str | int | None] = field(default_factory=lambda: {s: s for s in STAINS})
    csv_path: Path | None = None
    id_col: str = "ID"
    group_col: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return self.scheme.num_classes

    @property
    def multichannel(self) -> bool:
        """One multi-channel file per field (the pattern has no ``{channel}``)."""
        return "{channel}" not in self.pattern

    def paths(self, i: int) -> dict[str, Path]:
        """Stain → image file of field ``i``, for every stain of the dataset (one file for all in a multi-channel
        dataset)."""
        ext = self.exts[i] if self.exts is not None else ""
        return {
            c: self.image_dir / stain_file(self.pattern, self.ids[i], self.stain_names[c], ext) for c in self.stains
        }

    def sources(self, i: int) -> dict[str, StainFile]:
        """Stain → where to read it (file, and the channel in a multi-channel file): what image readers take."""
        channel = self.stain_names if self.multichannel else {}
        return {c: StainFile(p, channel.get(c)) for c, p in self.paths(i).items()}

    def subset(self, indices: Sequence[int] | np.ndarray) -> Table:
        """A table of the rows ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            ids=[self.ids[i] for i in idx],
            targets=self.targets[idx],
            groups=None if self.groups is None else self.groups[idx],
            exts=None if self.exts is None else [self.exts[i] for i in idx],
        )

    def column(self, name: str) -> np.ndarray:
        """Read another CSV column (e.g. a group column not loaded up front), aligned with ``ids``."""
        if self.csv_path is None:
            raise LocbenchError(f"this table has no CSV to read column {name!r} from")
        frame = _read_csv(self.csv_path)
        _require_columns(self.csv_path, frame, [self.id_col, name])
        by_id = dict(zip(frame[self.id_col].str.strip(), frame[name].str.strip(), strict=True))
        return np.array([by_id[i] for i in self.ids], dtype=object)


def table_from_config(
    dcfg: Any,
    *,
    path: str | os.PathLike | None = None,
    csv: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    check_images: bool = True,
) -> Table:
    """The table a data configuration names: every caller that holds a ``DataConfig`` loads its table here.

    Args:
        dcfg: A :class:`~locbench.config.DataConfig` (``path``, ``format``, ``id_col``, ``label_col``,
            ``label_sep``, ``pattern``, ``classes``, ``group_col``, ``stains``, ``skip_bad``).
        path: The dataset instead of ``dcfg.path`` (``--data`` of evaluate, predict, explain).
        csv: The label CSV relative to the dataset folder (default ``train.csv``).
        image_dir: The image folder (default ``<root>/train`` if it exists, else ``<root>``).
        check_images: Check that every stain file exists.

    Raises:
        LocbenchError: no dataset given, or as :func:`load_table`.
    """
    data = path or dcfg.path
    if not data:
        raise LocbenchError("no data given: pass --data DIR (a dataset folder or a CSV) or set data.path")
    return load_table(
        data,
        layout=dcfg.format,
        csv=csv,
        id_col=dcfg.id_col,
        label_col=dcfg.label_col,
        label_sep=dcfg.label_sep,
        pattern=dcfg.pattern,
        classes=dcfg.classes,
        image_dir=image_dir,
        group_col=dcfg.group_col,
        stains=dcfg.stains,
        skip_bad=dcfg.skip_bad,
        check_images=check_images,
    )


def load_table(
    data: str | os.PathLike,
    *,
    layout: str | None = None,
    csv: str | os.PathLike | None = None,
    id_col: str | None = None,
    label_col: str | None = None,
    label_sep: str | None = None,
    pattern: str | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
    image_dir: str | os.PathLike | None = None,
    group_col: str | None = None,
    stains: Mapping[str, str | int | None] | None = None,
    skip_bad: bool = False,
    check_images: bool = True,
) -> Table:
    """Read a label CSV and locate every field's images.

    Args:
        data: a dataset folder (``train.csv`` + ``train/``) or a CSV file.
        layout: ``kaggle2021``, ``kaggle2018`` or ``generic``; None detects it from the CSV header
            (``ID,Label`` → kaggle2021, ``Id,Target`` → kaggle2018; other headers need ``id_col``/``label_col``).
        csv: the CSV, relative to ``data`` when ``data`` is a folder (default ``train.csv``).
        id_col: id column (overrides the format's).
        label_col: label column (overrides the format's).
        label_sep: separator between classes in a label (default: the format's; generic: detected
            among ``|``, ``;``, ``,``, else whitespace). A class is its number or its name (case-insensitive).
        pattern: image file name relative to ``image_dir`` with ``{id}`` and ``{channel}`` (a stain's name, see
            ``stains``); ``{ext}`` picks ``.png``/``.tif``/``.tiff`` per field. Without ``{channel}`` each field is
            one multi-channel file (e.g. ``{id}.ome.tif``). Default ``{id}_{channel}{ext}``.
        classes: a built-in scheme name, a text file with one class name per line, or a list of names.
            Default: the format's scheme (required for generic CSVs).
        image_dir: folder of the images (default ``<root>/train`` if it exists, else ``<root>``).
        group_col: a column (e.g. antibody) carried into ``Table.groups`` for grouped splits.
        stains: stain (red, green, blue, yellow) → the name files use for it (``{blue: "DAPI"}`` reads
            ``{id}_DAPI.tif``) or, in a multi-channel file, its OME channel name or index; None: no such stain.
            Stains left out keep their own name.
        skip_bad: drop offending rows (and log how many) instead of raising.
        check_images: check that every stain file exists (one directory listing per folder).

    Returns:
        The table, rows in CSV order.

    Raises:
        LocbenchError: no CSV, an unreadable CSV, or a header that matches no format.
        BadInputError: rows with bad ids or labels, or missing images (all of them listed).
    """
    root, csv_path = _locate(data, csv)
    frame = _read_csv(csv_path)
    spec = _resolve_format(csv_path, list(frame.columns), layout, id_col, label_col)
    id_col = id_col or spec.id_col
    label_col = label_col or spec.label_col
    _require_columns(csv_path, frame, [id_col, label_col] + ([group_col] if group_col else []))
    scheme = _resolve_classes(classes, spec, csv_path)
    raw_ids = frame[id_col].str.strip().tolist()
    raw_labels = frame[label_col].str.strip().tolist()
    if label_sep is None and spec.name == "generic":
        label_sep = _guess_label_sep(raw_labels)
    elif label_sep is None:
        label_sep = spec.label_sep

    problems: dict[int, list[str]] = defaultdict(list)
    targets = np.zeros((len(raw_ids), scheme.num_classes), dtype=np.uint8)
    seen: dict[str, int] = {}
    for row, (fid, label) in enumerate(zip(raw_ids, raw_labels, strict=True)):
        id_problem = _check_id(fid)
        if id_problem:
            problems[row].append(id_problem)
        elif fid in seen:
            problems[row].append(f"duplicate id (first on line {seen[fid] + 2})")
        else:
            seen[fid] = row
        label_problem = _parse_label(label, label_sep, scheme, targets[row])
        if label_problem:
            problems[row].append(label_problem)

    if image_dir is None:
        image_dir = root / "train" if (root / "train").is_dir() else root
    elif not Path(image_dir).is_absolute():
        image_dir = root / image_dir  # relative to the dataset folder, not to the working directory
    image_dir = Path(image_dir)
    pattern = pattern or DEFAULT_PATTERN
    _check_pattern(pattern)
    names = check_stain_names(stains)
    ok_rows = [r for r in range(len(raw_ids)) if r not in problems]
    exts, found_stains = _locate_images(
        image_dir, pattern, names, raw_ids, ok_rows, problems, check_images=check_images, rel_to=root
    )

    if problems:
        items = [f"line {r + 2}, id {raw_ids[r]!r}: {'; '.join(p)}" for r, p in sorted(problems.items())]
        if not skip_bad:
            raise BadInputError(
                f"{csv_path}: {len(problems)} of {len(raw_ids)} rows cannot be used",
                items,
                fix=(
                    f"correct these rows or files (labels are class numbers 0..{scheme.num_classes - 1} or class "
                    f"names of scheme {scheme.name!r}, separated by {label_sep or 'spaces'!r}; ids are unique and "
                    "contain no path separators or '..'), or pass --skip-bad (skip_bad=True) to drop them"
                ),
            )
        log.warning("%s: dropped %d of %d rows with bad ids, labels or images", csv_path, len(problems), len(raw_ids))
    keep = np.array([r for r in range(len(raw_ids)) if r not in problems], dtype=np.int64)
    if len(keep) == 0:
        raise LocbenchError(f"{csv_path}: no usable rows (the CSV has a header but no data rows left)")

    groups = None
    if group_col:
        groups = np.array([g if g else raw_ids[r] for r, g in enumerate(frame[group_col].str.strip())], dtype=object)
        groups = groups[keep]
    table = Table(
        root=root,
        format=spec.name,
        scheme=scheme,
        ids=[raw_ids[r] for r in keep],
        targets=targets[keep],
        groups=groups,
        image_dir=image_dir,
        pattern=pattern,
        exts=None if exts is None else [exts[r] for r in keep],
        stains=found_stains,
        stain_names=names,
        csv_path=csv_path,
        id_col=id_col,
        group_col=group_col,
    )
    log.info("loaded %d fields (%s, scheme %s) from %s", len(table), table.format, scheme.name, csv_path)
    return table


def summarize(table: Table, *, sample: int = 0) -> dict:
    """A summary for ``locbench data info``: format, scheme, counts per class and one field's pixel format."""
    counts = table.targets.sum(axis=0)
    info: dict = {
        "root": str(table.root),
        "csv": str(table.csv_path),
        "format": table.format,
        "scheme": table.scheme.name,
        "num_classes": table.num_classes,
        "num_fields": len(table),
        "colors": list(table.stains),
        "labels_per_field": round(float(table.targets.sum(axis=1).mean()), 3),
        "class_counts": {name: int(c) for name, c in zip(table.scheme.classes, counts, strict=True)},
    }
    if table.groups is not None:
        info["num_groups"] = len(set(table.groups.tolist()))
    stains = {}
    for stain, source in table.sources(sample).items():
        where = source.name if source.channel is None else f"{source.name} channel {source.channel!r}"
        try:
            img = read_field_stains({stain: source}, [stain])[stain]
            stains[stain] = {"file": where, "height": img.shape[0], "width": img.shape[1], "dtype": str(img.dtype)}
        except ImageReadError as e:
            stains[stain] = {"file": where, "error": e.reason}
    info["sample"] = {"id": table.ids[sample], "stains": stains}
    return info


# -- helpers -----------------------------------------------------------------------------------------------------


def _locate(data: str | os.PathLike, csv: str | os.PathLike | None) -> tuple[Path, Path]:
    data = Path(data)
    if data.is_dir():
        csv_path = Path(csv) if csv is not None and Path(csv).is_absolute() else data / (csv or "train.csv")
        root = data
    elif data.is_file():
        csv_path, root = data, data.parent
    else:
        raise LocbenchError(f"{data}: no such dataset folder or CSV file; give a folder with train.csv or a CSV path")
    if not csv_path.is_file():
        raise LocbenchError(f"{csv_path}: label CSV not found; put train.csv in {root} or pass the CSV path")
    return root, csv_path


def _read_csv(path: Path):
    if path.stat().st_size == 0:
        raise LocbenchError(f"{path}: the file is empty; a label CSV needs a header row (e.g. ID,Label) and rows")
    try:
        # utf-8-sig drops a byte-order mark (Excel writes one); the C parser accepts \r\n line ends.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if not isinstance(frame.index, pd.RangeIndex):
            # the rows have more fields than the header: pandas took the first column(s) for the index
            if isinstance(frame.index, pd.MultiIndex) or not (frame.iloc[:, -1] == "").all():
                raise LocbenchError(
                    f"{path}: the rows have more fields than the header ({', '.join(map(str, frame.columns))}); "
                    "name every column in the header"
                )
            # a stray comma ending every row (an empty last column): read the columns the header names
            shifted = frame.reset_index()
            frame = shifted.iloc[:, :-1].set_axis(frame.columns, axis=1)
    except pd.errors.EmptyDataError:
        raise LocbenchError(f"{path}: no header row found; a label CSV starts with a header such as ID,Label") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise LocbenchError(f"{path}: cannot be parsed as a comma-separated UTF-8 CSV ({e})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _resolve_format(path: Path, columns: list[str], layout: str | None, id_col: str | None, label_col: str | None):
    if layout is not None:
        if layout == "generic":
            if not (id_col and label_col):
                raise LocbenchError("format 'generic' needs id_col and label_col (--id-col, --label-col)")
            return FormatSpec("generic", id_col, label_col, None, "")
        if layout not in FORMATS:
            raise LocbenchError(f"unknown format {layout!r}; valid: {', '.join(FORMATS)}, generic")
        return FORMATS[layout]
    cols = set(columns)
    for spec in FORMATS.values():
        if {spec.id_col, spec.label_col} <= cols and id_col in (None, spec.id_col):
            return spec
    if id_col and label_col:
        return FormatSpec("generic", id_col, label_col, None, "")
    hint = ""
    if len(columns) == 1:
        for sep in (";", "\t", "|", " "):
            if sep in columns[0]:
                hint = f" The header looks {sep!r}-separated; locbench reads comma-separated CSV files."
                break
    raise LocbenchError(
        f"{path}: header {','.join(columns)!r} matches no known layout (ID,Label = kaggle2021; "
        f"Id,Target = kaggle2018).{hint} For another layout pass --id-col and --label-col (and --classes)."
    )


def _require_columns(path: Path, frame, names: list[str]) -> None:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise LocbenchError(
            f"{path}: no column {', '.join(repr(m) for m in missing)}; the columns are {', '.join(frame.columns)}"
        )


def _resolve_classes(classes, spec: FormatSpec, csv_path: Path) -> ClassScheme:
    if classes is None:
        if not spec.scheme:
            raise LocbenchError(
                f"{csv_path}: a generic CSV needs its class names: pass --classes hpa2021|hpa2018 or a file "
                "with one class name per line"
            )
        return get_scheme(spec.scheme)
    if isinstance(classes, str) and classes in SCHEMES:
        return get_scheme(classes)
    if isinstance(classes, str | os.PathLike):
        path = Path(classes)
        if not path.is_file():
            raise LocbenchError(
                f"classes {str(classes)!r} is neither a scheme ({', '.join(SCHEMES)}) nor a file of class names"
            )
        names = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        if not names:
            raise LocbenchError(f"{path}: no class names in it; write one class name per line")
        return ClassScheme(path.stem, tuple(names))
    names = tuple(str(c) for c in classes)
    if not names:
        raise LocbenchError("classes is an empty list; give at least one class name")
    return ClassScheme("custom", names)


def _guess_label_sep(labels: list[str]) -> str | None:
    for sep in ("|", ";", ","):
        if any(sep in lab for lab in labels):
            return sep
    return None


def _check_id(fid: str) -> str:
    if not fid:
        return "empty id"
    # Ids become file names: anything that could leave the image folder is refused.
    if "/" in fid or "\\" in fid or ".." in fid or "\0" in fid or os.path.isabs(fid):
        return "id contains a path separator or '..' (ids must be plain file-name parts)"
    return ""


def _parse_label(label: str, sep: str | None, scheme: ClassScheme, out: np.ndarray) -> str:
    """Set ``out`` (multi-hot) from one label: classes by number (ASCII digits) or by name (case-insensitive)."""
    if (sep is None or sep.isspace()) and scheme.lookup(label) is not None:
        parts = [label.strip()]  # one class name with spaces in it ("Nuclear membrane") under a whitespace separator
    else:
        parts = [p.strip() for p in (label.split(sep) if sep else label.split())]
    parts = [p for p in parts if p]
    if not parts:
        return "empty label (every field needs at least one class)"
    nums, unknown = [], []
    for p in parts:
        if p.isascii() and p.isdigit():
            nums.append(int(p))
        elif any(ch.isdigit() for ch in p) and p.isdigit():
            # str.isdigit() also accepts Arabic-Indic, Devanagari, fullwidth... digits; reading them as numbers
            # would turn a stray keyboard layout into silent labels
            return f"label {label!r} has class id {p!r} written with non-ASCII digits; write class numbers with 0-9"
        else:
            k = scheme.lookup(p)
            if k is None:
                close = scheme.closest(p)
                unknown.append(f"{p!r}" + (f" (did you mean {close!r}?)" if close else ""))
            else:
                nums.append(k)
    if unknown:
        return f"label {label!r} has unknown class names {', '.join(unknown)} (scheme {scheme.name!r})"
    out_of_range = [n for n in nums if n >= scheme.num_classes]
    if out_of_range:
        return (
            f"label {label!r} has unknown class ids {', '.join(map(str, out_of_range))} "
            f"(scheme {scheme.name!r} has 0..{scheme.num_classes - 1})"
        )
    out[nums] = 1
    return ""


def stain_file(pattern: str, fid: str, name: str | int | None, ext: str = "") -> str:
    """The file name of one stain (``name``, as ``data.stains`` has it) of field ``fid``, relative to the image
    folder; a pattern without ``{channel}`` names one multi-channel file for every stain."""
    return pattern.format(id=fid, channel=name, ext=ext)


def _check_pattern(pattern: str) -> None:
    if "{id}" not in pattern:
        raise LocbenchError(
            f"file pattern {pattern!r} needs {{id}}, e.g. '{{id}}_{{channel}}.tif' (one file per stain) or "
            "'{id}.ome.tif' (one multi-channel file per field)"
        )
    try:
        pattern.format(id="x", channel="green", ext=".png")
    except (KeyError, IndexError, ValueError) as e:
        raise LocbenchError(
            f"file pattern {pattern!r} is malformed ({e}); placeholders: {{id}} {{channel}} {{ext}}"
        ) from None


def _locate_images(
    image_dir: Path,
    pattern: str,
    names: Mapping[str, str | int | None],
    ids: list[str],
    rows: list[int],
    problems: dict[int, list[str]],
    *,
    check_images: bool,
    rel_to: Path,
) -> tuple[list[str] | None, tuple[str, ...]]:
    """Per-row extension for ``{ext}`` and the stains the dataset has; records missing files in ``problems``.

    ``names`` is ``data.stains``: the ``{channel}`` part of each stain's file; a stain named None is not looked for.
    """
    has_ext = "{ext}" in pattern
    exts = [IMAGE_EXTS[0]] * len(ids) if has_ext else None
    named = tuple(c for c in STAINS if names[c] is not None)
    if not check_images:
        return exts, named
    if not image_dir.is_dir():
        raise LocbenchError(f"{image_dir}: image folder not found; images go in <dataset>/train/ (or pass image_dir)")
    listings: dict[Path, set[str]] = {}

    def exists(rel: str) -> bool:
        # One listing per folder instead of one stat per file: 100k fields × 4 stains stays fast.
        path = image_dir / rel
        names = listings.get(path.parent)
        if names is None:
            names = set(os.listdir(path.parent)) if path.parent.is_dir() else set()
            listings[path.parent] = names
        return path.name in names

    found: dict[int, set[str]] = {}
    for r in rows:
        fid = ids[r]
        ext = ""
        if has_ext:
            ext = next(
                (e for e in IMAGE_EXTS if any(exists(stain_file(pattern, fid, names[c], e)) for c in named)),
                IMAGE_EXTS[0],
            )
            exts[r] = ext
        found[r] = {c for c in named if exists(stain_file(pattern, fid, names[c], ext))}
    # A stain no field has is absent from the dataset (e.g. a 3-stain dataset), not missing per field.
    stains = tuple(c for c in named if any(c in f for f in found.values()))
    if not stains and rows:
        stains = named
    # ...but a stain the user named (data.stains) that no file matches is a wrong name, not an absent stain
    unmatched = [c for c in named if names[c] != c and c not in stains and rows]
    if unmatched:
        c, r = unmatched[0], rows[0]
        example = _rel(image_dir / stain_file(pattern, ids[r], names[c], exts[r] if exts else ""), rel_to)
        raise LocbenchError(
            f"data.stains.{c} is {names[c]!r} but no field has such a file (e.g. {example}, from pattern "
            f"{pattern!r}); correct the name (--stains {c}=NAME) or set it to null (--stains {c}=) if the dataset "
            "has no such stain"
        )

    def where(r: int, c: str, ext: str) -> str:
        file = _rel(image_dir / stain_file(pattern, ids[r], names[c], ext), rel_to)
        return file if names[c] == c or "{channel}" not in pattern else f"{file} (data.stains.{c})"

    for r in rows:
        missing = [c for c in stains if c not in found[r]]
        if missing:
            ext = exts[r] if exts is not None else ""
            files = list(dict.fromkeys(where(r, c, ext) for c in missing))  # a multi-channel file: listed once
            problems[r].append(f"missing image files {', '.join(files)}")
    return exts, stains


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
