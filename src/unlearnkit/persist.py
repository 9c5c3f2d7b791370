"""Hashing and durable writes: the one place for canonical-JSON digests, atomic file replacement and appends.

Everything that identifies content (cache keys, config hashes, ledger chains, SISA seals) hashes
:func:`canonical_json`; everything that must survive a crash is written by :func:`atomic_write` (temporary sibling,
fsync, ``os.replace``, fsync of the folder) or appended by :func:`append_line` (fsync per line). Neither follows a
symbolic link at the target path: a link planted in a run or cache folder would otherwise make unlearnkit overwrite
or extend a file elsewhere.

This module sits at the bottom of the import graph (it imports only :mod:`unlearnkit.errors`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import types
from pathlib import Path
from typing import Any

from unlearnkit.errors import UnlearnkitError


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, types.MappingProxyType):
        return dict(o)
    dump = getattr(o, "model_dump", None)  # pydantic models: their JSON form
    if callable(dump):
        return dump(mode="json")
    if hasattr(o, "tolist"):  # numpy arrays and scalars, tensors
        return o.tolist()
    raise TypeError(f"cannot hash object of type {type(o).__name__}")


def canonical_json(obj: Any, *, ensure_ascii: bool = True, allow_nan: bool = True) -> str:
    """JSON with sorted keys and no whitespace: the form every digest of unlearnkit is computed over.

    Sets are sorted, mapping proxies become dicts, pydantic models their JSON dump, arrays their lists.

    Args:
        ensure_ascii: escape non-ASCII characters (the default; the ledger keeps UTF-8 for its stored text).
        allow_nan: write NaN / Infinity (invalid JSON); False raises ``ValueError`` on non-finite floats.

    Raises:
        TypeError: an object that has no JSON form.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default, ensure_ascii=ensure_ascii,
                      allow_nan=allow_nan)


def stable_hash(obj: Any) -> str:
    """SHA-256 hex digest of :func:`canonical_json` of ``obj``: equal values give equal digests."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder, making the names created or renamed in it durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_symlink(path: str | os.PathLike[str], what: str = "file") -> None:
    """Raise :class:`~unlearnkit.errors.UnlearnkitError` if ``path`` exists as a symbolic link.

    unlearnkit creates every file of its run and cache folders itself; a link there points somewhere it must not
    write (or read a digest from).
    """
    p = Path(path)
    if p.is_symlink():
        raise UnlearnkitError(f"{what} {p} is a symbolic link (to {os.readlink(p)!r}); unlearnkit never follows links "
                              "inside its run and cache folders: remove the link and rerun")


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, mode: int = 0o644,
                 sync_parent: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: a reader sees the old or the new content, never a mix.

    Writes a temporary sibling, fsyncs it, sets ``mode``, renames it over ``path`` and fsyncs the folder
    (``sync_parent``). The folder is created if missing (0700 when ``mode`` is private to the owner).

    Raises:
        UnlearnkitError: ``path`` is a symbolic link.
        OSError: the folder is not writable.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o777 if mode & 0o077 else 0o700)
    refuse_symlink(p)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_parent:
        fsync_dir(p.parent)


def append_line(path: str | os.PathLike[str], line: str, *, mode: int = 0o644) -> None:
    """Append ``line`` plus a newline to ``path``, flushed and fsynced (a crash loses at most this line).

    A partial last line left by an earlier crash is ended first, so the new line starts on its own. The file is
    opened with ``O_NOFOLLOW``: a symbolic link at ``path`` is refused, never appended through.

    Raises:
        UnlearnkitError: ``path`` is a symbolic link, or not a regular file.
    """
    if "\n" in line:
        raise ValueError("append_line takes one line without newlines")
    p = Path(path)
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(p, flags, mode)
    except OSError:
        refuse_symlink(p)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnlearnkitError(f"{p} is not a regular file; remove it and rerun")
        data = line.encode("utf-8") + b"\n"
        if st.st_size > 0 and os.pread(fd, 1, st.st_size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)

def check_writable_dir(path: str | os.PathLike[str], what: str = "folder", fix: str = "", *,
                       create: bool = True, mode: int = 0o777) -> None:
    """Make sure ``path`` is a folder in which files can be created (checked by creating and removing one), so a
    run fails before training instead of after it. ``create`` makes a missing folder (with ``mode``, less the
    umask); without it ``path`` must exist and must not be a symbolic link (a link inside a run folder points
    somewhere unlearnkit must not write).

    Raises:
        UnlearnkitError: the folder cannot be created, is not a folder, is a link (``create=False``), or is not
            writable; the message ends with ``fix``.
    """
    p = Path(path)
    tail = f"; {fix}" if fix else ""
    if not create:
        refuse_symlink(p, what)
    try:
        if create:
            p.mkdir(parents=True, exist_ok=True, mode=mode)
        if not p.is_dir():
            raise UnlearnkitError(f"the {what} {p} is not a folder{tail}")
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UnlearnkitError(f"cannot write the {what} {p} ({err.strerror or err}){tail}") from None


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) readable by its owner only (0700), or tighten an existing folder to 0700.

    For folders holding what must stay private (the deletion ledger and the service store name the deleted ids).

    Raises:
        UnlearnkitError: ``path`` is a symbolic link.  OSError: it cannot be created.
    """
    p = Path(path)
    refuse_symlink(p, "folder")
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(p.stat().st_mode) != 0o700:
        try:
            os.chmod(p, 0o700)
        except OSError:  # pragma: no cover - a folder we do not own: left as it is
            pass
    return p


__all__ = ["append_line", "check_writable_dir", "private_dir", "atomic_write", "canonical_json", "fsync_dir",
           "refuse_symlink", "sha256_file",
           "stable_hash"]
