"""Where a command may write: never over what it reads, never over an existing file unless asked.

:func:`check_output` is the one check every command with an ``--out`` runs before any work (predict, evaluate,
segment, explain and ``cells evaluate|predict``): an output that is an input file or lies inside a folder the
command reads (a run folder, the dataset) is refused even with ``--force``; the places a command writes to by
design (``RUN/eval/``, ``RUN/explain/``) are allowed; an existing output is replaced only with ``--force``. The
write itself stays atomic (``locbench.store.atomic``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from locbench.errors import LocbenchError


def check_output(
    out: str | os.PathLike,
    *,
    reads: Iterable[str | os.PathLike | None] = (),
    allowed: Iterable[str | os.PathLike] = (),
    reusable: bool = False,
    force: bool = False,
    folder: bool = False,
    what: str = "--out",
) -> Path:
    """Refuse an output path that would overwrite something; returns it.

    Args:
        out: The file (or with ``folder``, the folder) to write.
        reads: What the command reads: files, and folders whose every file is input (a run folder, a dataset
            folder). None entries are skipped.
        allowed: Files or folders inside ``reads`` that the command writes by design (``RUN/eval``); writing there,
            and replacing what is there, is not refused.
        reusable: ``out`` is a folder the command reuses (it recognised it as its own earlier output).
        force: Replace an existing output (never an input).
        folder: ``out`` is a folder: it "exists" when it holds anything.
        what: The option's name, for messages.

    Raises:
        LocbenchError: naming ``out``, what it would overwrite and the fix.
    """
    if not str(out).strip():
        raise LocbenchError(f"{what} is empty; give a {'folder' if folder else 'file'} path")
    path = Path(out)
    target = path.resolve()
    if any(target == Path(a).resolve() or target.is_relative_to(Path(a).resolve()) for a in allowed):
        return path
    for read in reads:
        if read is None or not str(read).strip():
            continue
        source = Path(read).resolve()
        if target == source or (source.is_dir() and target.is_relative_to(source)):
            where = "is an input of this command" if target == source else f"lies in {read}, which this command reads"
            raise LocbenchError(f"{what} {path} {where}; write elsewhere (--force never overwrites an input)")
    if folder:
        if path.is_file():
            raise LocbenchError(f"{what} {path} is a file; give a folder path")
        exists = path.is_dir() and any(path.iterdir()) and not reusable
    else:
        if path.is_dir():
            raise LocbenchError(f"{what} {path} is a folder; give a file path")
        exists = path.exists()
    if exists and not force:
        raise LocbenchError(
            f"{what} {path} already exists{' and is not empty' if folder else ''}; give a new path, or add --force "
            "to replace it"
        )
    return path


def data_inputs(data: str | os.PathLike | None) -> list[str]:
    """What a dataset path makes a command read: a dataset folder, or a CSV and the folder holding it (its images)."""
    if data is None or not str(data).strip():
        return []
    path = Path(data)
    return [str(data), str(path.parent)] if path.is_file() else [str(data)]
