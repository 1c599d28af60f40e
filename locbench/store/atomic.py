"""Atomic file writes: write to a temporary name in the same folder, fsync, rename into place.

A killed process never leaves a half-written file under the final name. A write that fails (disk full, read-only
or unwritable folder, a folder or a file in the way) raises :class:`WriteError`, which names the path and the fix
and is both a :class:`~locbench.errors.LocbenchError` (the CLI prints it, exit 2) and an ``OSError``.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from locbench.errors import LocbenchError

#: Prefix of the scratch files :func:`atomic_write` renames into place; a killed writer can leave one behind.
TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"


class WriteError(LocbenchError, OSError):
    """A file or folder could not be written; ``errno`` is the operating system's code."""

    def __str__(self) -> str:
        # OSError's str() would print "[Errno 28] ...: 'path'" once errno is set; the message says it better
        return str(self.args[0]) if self.args else super().__str__()


def write_error(path: str | os.PathLike, e: OSError, what: str = "") -> WriteError:
    """A :class:`WriteError` for ``path`` from the OS error ``e``, saying what to do about it."""
    target = f"{what} {path}".strip()
    code = e.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        msg = (
            f"cannot write {target}: no space left on the device ({e.strerror}); free some space or write "
            "elsewhere, then run the same command again (finished work is kept; --resume continues a run)"
        )
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        msg = f"cannot write {target}: {e.strerror}; choose a folder you can write to"
    elif code == errno.EISDIR:
        msg = f"cannot write {target}: it is a folder; give a file path"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        msg = f"cannot write {target}: a file is in the way of that path ({e.filename}); give another path"
    else:
        msg = f"cannot write {target}: {e.strerror or e}"
    err = WriteError(msg)
    err.errno, err.strerror, err.filename = code, e.strerror, os.fspath(path)
    return err


def ensure_writable_dir(path: str | os.PathLike, *, what: str = "--out") -> Path:
    """Create the folder ``path`` if needed and prove it writable (a scratch file made and removed), before any
    work starts; raises :class:`WriteError` naming ``what`` (the option it came from) otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        err = WriteError(f"{what} {path} is a file, not a folder; give a folder (new or existing)")
        err.errno, err.filename = errno.ENOTDIR, os.fspath(path)
        raise err
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f"{TMP_PREFIX}write-test.", suffix=TMP_SUFFIX, dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise write_error(path, e, what) from None
    return path


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete the scratch files killed writers left in ``folder`` and its subfolders; returns how many.

    Only call this while holding the folder's lock: a live writer's scratch file looks the same.
    """
    n = 0
    for p in Path(folder).rglob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], None], *, sync: bool = True) -> Path:
    """Call ``writer(fileobj)`` on a temporary file beside ``path`` and rename it to ``path`` when done.

    ``sync=False`` skips the fsync before the rename: a killed process still never leaves a half file, only a
    machine crash can; for files that are cheap to make again (thumbnails), where the fsync is half the time.

    Raises:
        WriteError: the file could not be written (nothing is left under ``path`` or beside it).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        # mkstemp makes 0600 files: give the mode any new file gets (0644 under umask 022), or a colleague could
        # not read a shared run folder or cache
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, LocbenchError):
            raise write_error(path, e) from e
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """``numpy.savez`` (uncompressed) of ``arrays`` to ``path``, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_npy(path: str | os.PathLike, array: Any) -> Path:
    """``numpy.save`` of one array to ``path``, atomically."""
    buf = io.BytesIO()
    np.save(buf, array)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and fsync; a torn last line is ignored by :func:`read_jsonl`."""
    path = Path(path)
    line = json.dumps(record, default=_json_default) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise write_error(path, e) from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read JSON lines, skipping a torn (unparseable) last line left by a kill."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return out


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it: a race with other threads' files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays, paths
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
