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
from locbench.errors import MAX_LISTED, BadInputError, LocbenchError

log = logging.getLogger(__name__)

#: Extensions tried, in order, for ``{ext}`` in a pattern (Kaggle 2018 ships PNGs and full-size TIFFs).
IMAGE_EXTS = (".png", ".tif", ".tiff")
DEFAULT_PATTERN = "{id}_{channel}{ext}"
#: Rows listed (each with the exact paths tried) when rows only miss image files; the rest are counted.
MAX_LISTED_FILES = 5


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
    id_series = frame[id_col].str.strip()
    raw_ids = id_series.tolist()
    # a million labels hold a few hundred distinct values: each is parsed once, and the rows take their codes
    labels = frame[label_col].astype("category")
    distinct = [str(v).strip() for v in labels.cat.categories]
    codes = labels.cat.codes.to_numpy()
    group_values = frame[group_col].str.strip().tolist() if group_col else None
    del labels, frame  # the million label strings need not wait for the image check
    if label_sep is None and spec.name == "generic":
        label_sep = _guess_label_sep(distinct)
    elif label_sep is None:
        label_sep = spec.label_sep

    problems: dict[int, list[str]] = defaultdict(list)
    distinct_targets = np.zeros((len(distinct), scheme.num_classes), dtype=np.uint8)
    label_problems = [_parse_label(v, label_sep, scheme, distinct_targets[k]) for k, v in enumerate(distinct)]
    targets = distinct_targets[codes]
    bad_label = np.array([bool(p) for p in label_problems], dtype=bool)
    duplicate = id_series.duplicated(keep="first").to_numpy()
    first_row = {} if not duplicate.any() else _first_rows(id_series, duplicate)
    # ids are checked in bulk too; only the rows that fail are looked at one by one, for their messages
    odd_id = (id_series.eq("") | id_series.str.contains(r"[/\\\x00]|\.\.", regex=True)).to_numpy()
    for row in np.flatnonzero(odd_id | duplicate | bad_label[codes]).tolist():
        id_problem = _check_id(raw_ids[row])
        if id_problem:
            problems[row].append(id_problem)
        elif duplicate[row]:
            problems[row].append(f"duplicate id (first on line {first_row[raw_ids[row]] + 2})")
        if label_problems[codes[row]]:
            problems[row].append(label_problems[codes[row]])
    del codes

    if image_dir is None:
        image_dir = root / "train" if (root / "train").is_dir() else root
    elif not Path(image_dir).is_absolute():
        image_dir = root / image_dir  # relative to the dataset folder, not to the working directory
    image_dir = Path(image_dir)
    pattern = pattern or DEFAULT_PATTERN
    _check_pattern(pattern)
    names = check_stain_names(stains)
    bad = np.zeros(len(raw_ids), dtype=bool)
    bad[list(problems)] = True
    found = _locate_images(
        image_dir, pattern, names, id_series.to_numpy(), ~bad, check_images=check_images, rel_to=root
    )
    missing = found.missing.any(axis=1) if found.missing is not None else np.zeros(len(raw_ids), dtype=bool)
    bad |= missing

    n_bad = int(bad.sum())
    if n_bad:
        if not skip_bad:
            raise _bad_rows_error(
                csv_path,
                raw_ids,
                problems,
                found,
                image_dir,
                pattern,
                names,
                scheme,
                label_sep,
                bad,
                int(missing.sum()),
            )
        log.warning(
            "%s: dropped %d of %d rows with bad ids, labels or images (%d of them for missing image files)",
            csv_path,
            n_bad,
            len(raw_ids),
            int(missing.sum()),
        )
    keep = np.flatnonzero(~bad)
    if len(keep) == 0:
        raise LocbenchError(f"{csv_path}: no usable rows (the CSV has a header but no data rows left)")

    groups = None
    if group_col:
        groups = np.array([g if g else raw_ids[r] for r, g in enumerate(group_values)], dtype=object)
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
        exts=None if found.exts is None else [found.exts[r] for r in keep],
        stains=found.stains,
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
        # utf-8-sig drops a byte-order mark (Excel writes one); the C parser accepts \r\n line ends. Read in chunks:
        # the parser's buffers stay small (a 1e6-row CSV peaks 50 MB lower), the strings are the same.
        reader = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", chunksize=100_000)
        with reader:
            frame = pd.concat(list(reader))
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


def _first_rows(ids: pd.Series, duplicate: np.ndarray) -> dict[str, int]:
    """Id → its first row, for the ids that occur more than once."""
    again = set(ids[duplicate])
    first = ids.isin(again).to_numpy() & ~duplicate
    return {ids.iat[r]: int(r) for r in np.flatnonzero(first)}


@dataclass
class ImagesFound:
    """What :func:`_locate_images` found on disk, per CSV row.

    Attributes:
        exts: per-row extension filling ``{ext}`` (None when the pattern has none).
        stains: the stains the dataset has (a stain no field has is absent, not missing per field).
        missing: (rows, len(stains)) True where a checked row's stain file does not exist; None when not checked.
        folder_files: how many entries the image folder holds (None when not checked).
        example: one of them (a hint when the pattern names other files).
    """

    exts: list[str] | None
    stains: tuple[str, ...]
    missing: np.ndarray | None = None
    folder_files: int | None = None
    example: str | None = None


class _Listings:
    """The names in each folder below ``root``, each folder listed once (``os.scandir``); a folder's existence is
    read from its parent's listing, so a million absent per-field folders cost no system call each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._names: dict[str, set[str]] = {}

    def names(self, rel: str) -> set[str]:
        """Entry names in ``root/rel`` (``rel`` "" is ``root``, "/"-separated); empty if it is not a folder."""
        known = self._names.get(rel)
        if known is not None:
            return known
        plain = not rel.startswith("/") and not {".", "..", ""} & set(rel.split("/"))
        if rel and plain:
            parent, _, name = rel.rpartition("/")
            if name not in self.names(parent):
                return set()  # not cached: a miss costs a set lookup, and caching a million of them would not
        try:
            with os.scandir(self.root / rel if rel else self.root) as entries:
                names = {e.name for e in entries}
        except (NotADirectoryError, FileNotFoundError):  # (only reached for "./", "../" or absolute folders)
            names = set()
        self._names[rel] = names
        return names


def _present(listings: _Listings, pattern: str, stain: str, ext: str, ids: np.ndarray) -> np.ndarray:
    """Whether the file ``pattern`` names for each id (one stain, one extension) exists, without a stat per file.

    Usual layout (a fixed folder, ``{id}`` once in the file name): the folder's names that fit the pattern are cut
    down to ids, and the ids are looked up in that set at once. Other layouts build each row's name as a string.
    """
    template = pattern.format(id="\0", channel=stain, ext=ext)  # ids never hold "\0" (refused in _check_id)
    head, _, tail = template.rpartition("/")
    if "\0" not in head and tail.count("\0") == 1:
        names = listings.names(head)
        if not names:
            return np.zeros(len(ids), dtype=bool)
        pre, suf = tail.split("\0")
        cut = slice(len(pre), -len(suf) if suf else None)
        have = {n[cut] for n in names if n.startswith(pre) and n.endswith(suf) and len(n) > len(pre) + len(suf)}
        return pd.Series(ids, dtype=object).isin(have).to_numpy()
    pieces = template.split("\0")
    out = np.zeros(len(ids), dtype=bool)
    for k, fid in enumerate(ids):
        folder, _, name = fid.join(pieces).rpartition("/")
        out[k] = name in listings.names(folder)
    return out


def _locate_images(
    image_dir: Path,
    pattern: str,
    names: Mapping[str, str | int | None],
    ids: np.ndarray,
    rows: np.ndarray,
    *,
    check_images: bool,
    rel_to: Path,
) -> ImagesFound:
    """Per-row extension for ``{ext}``, the stains the dataset has, and which stain files of the rows ``rows``
    (a boolean mask) are missing. One listing per folder and set lookups in bulk: a million rows take seconds and
    no memory per row beyond a few bits.

    ``names`` is ``data.stains``: the ``{channel}`` part of each stain's file; a stain named None is not looked for.
    """
    has_ext = "{ext}" in pattern
    exts = [IMAGE_EXTS[0]] * len(ids) if has_ext else None
    named = tuple(c for c in STAINS if names[c] is not None)
    if not check_images:
        return ImagesFound(exts, named)
    if not image_dir.is_dir():
        raise LocbenchError(f"{image_dir}: image folder not found; images go in <dataset>/train/ (or pass image_dir)")
    listings = _Listings(image_dir)
    checked = np.flatnonzero(rows).astype(np.int32)
    found = np.zeros((len(checked), len(named)), dtype=bool)
    ext_of = np.zeros(len(checked), dtype=np.int8)
    left = np.arange(len(checked), dtype=np.int32)  # rows none of whose files was found with the extensions so far
    for k, ext in enumerate(IMAGE_EXTS if has_ext else ("",)):
        if len(left) == 0:
            break
        sub = ids if len(left) == len(ids) else ids[checked[left]]  # (every row, the usual case: no copy)
        hits = np.stack([_present(listings, pattern, names[c], ext, sub) for c in named], axis=1)
        del sub
        hit = hits.any(axis=1)
        found[left[hit]] = hits[hit]
        ext_of[left[hit]] = k
        left = left[~hit]
    if exts is not None:
        for r, k in zip(checked[ext_of > 0].tolist(), ext_of[ext_of > 0].tolist(), strict=True):
            exts[r] = IMAGE_EXTS[k]
    # A stain no field has is absent from the dataset (e.g. a 3-stain dataset), not missing per field.
    has = found.any(axis=0)
    stains = tuple(c for c, h in zip(named, has, strict=True) if h) or named
    # ...but a stain the user named (data.stains) that no file matches is a wrong name, not an absent stain
    unmatched = [c for c in named if names[c] != c and c not in stains] if len(checked) else []
    if unmatched:
        c, r = unmatched[0], int(checked[0])
        example = _rel(image_dir / stain_file(pattern, ids[r], names[c], exts[r] if exts else ""), rel_to)
        raise LocbenchError(
            f"data.stains.{c} is {names[c]!r} but no field has such a file (e.g. {example}, from pattern "
            f"{pattern!r}); correct the name (--stains {c}=NAME) or set it to null (--stains {c}=) if the dataset "
            "has no such stain"
        )
    missing = np.zeros((len(ids), len(stains)), dtype=bool)
    missing[checked] = ~found[:, [named.index(c) for c in stains]]
    top = listings.names("")
    return ImagesFound(exts, stains, missing, len(top), min(top) if top else None)


def _missing_file(
    image_dir: Path, pattern: str, names: Mapping[str, str | int | None], stain: str, fid: str, ext: str
) -> str:
    """The exact path tried for one stain of one field, with the data.stains key that named it when not its own."""
    file = str(image_dir / stain_file(pattern, fid, names[stain], ext))
    return file if names[stain] == stain or "{channel}" not in pattern else f"{file} (data.stains.{stain})"


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _bad_rows_error(
    csv_path: Path,
    ids: list[str],
    problems: dict[int, list[str]],
    found: ImagesFound,
    image_dir: Path,
    pattern: str,
    names: Mapping[str, str | int | None],
    scheme: ClassScheme,
    label_sep: str | None,
    bad: np.ndarray,
    n_missing: int,
) -> BadInputError:
    """One error for every unusable row: the first :data:`MAX_LISTED` described (missing files by the exact path
    tried), the others counted; the fix speaks of labels, of files, or of both, as the rows need."""
    bad_rows = np.flatnonzero(bad)
    items = []
    # rows with bad labels are all listed (up to MAX_LISTED); rows that only miss files differ just in their id
    for r in bad_rows[: MAX_LISTED if problems else MAX_LISTED_FILES].tolist():
        what = list(problems.get(r, []))
        if found.missing is not None and found.missing[r].any():
            ext = found.exts[r] if found.exts is not None else ""
            paths = list(
                dict.fromkeys(  # a multi-channel file: listed once
                    _missing_file(image_dir, pattern, names, c, ids[r], ext)
                    for c, gone in zip(found.stains, found.missing[r], strict=True)
                    if gone
                )
            )
            what.append(f"missing {', '.join(paths)}")
        items.append(f"line {r + 2}, id {ids[r]!r}: {'; '.join(what)}")
    head = f"{csv_path}: {len(bad_rows):,} of {len(ids):,} rows cannot be used"
    fixes = []
    if problems:
        head += f"; {len(problems):,} have bad ids or labels"
        fixes.append(
            f"correct the labels and ids of these rows (labels are class numbers 0..{scheme.num_classes - 1} or "
            f"class names of scheme {scheme.name!r}, separated by {label_sep or 'spaces'!r}; ids are unique and "
            "contain no path separators or '..')"
        )
    if n_missing:
        n_files = int(found.missing.sum())
        exts = f"; {{ext}} is the first of {', '.join(IMAGE_EXTS)} found per field" if "{ext}" in pattern else ""
        listed = f"{found.folder_files:,} entries" + (f", e.g. {found.example!r}" if found.example else "")
        head += (
            f"; {n_missing:,} lack image files ({n_files:,} files missing; stains {', '.join(found.stains)}).\n"
            f"Image files are looked for as {image_dir}/{pattern} (file name pattern {pattern!r}{exts}); "
            f"{image_dir} holds {listed}"
        )
        fixes.append(
            f"put the image files in {image_dir}, or name where they are: the file name pattern is data.pattern "
            "(--pattern on every command that reads data, e.g. --pattern '{id}_{channel}.tif'; {id} is filled in, "
            "{channel} with the stain's name from data.stains / --stains, {ext} tries .png, .tif, .tiff), relative "
            "to the image folder (DATA/train if it exists, else DATA; a subfolder can be part of the pattern)"
        )
    fixes.append("or pass --skip-bad (skip_bad=True) to drop these rows")
    return BadInputError(head, items, "; ".join(fixes), total=len(bad_rows))
