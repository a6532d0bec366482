"""Files of the CA folder: created with their final mode, never replaced by accident.

A file is written to a temp file in the same folder (created by os.open with
its mode, so a key is 0600 from its first byte), fsync-ed, then either
linked into place (fails if the name exists: no silent overwrite) or
renamed over the old one when replacing is intended.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from .errors import PkiError


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write data to path via a temp file created with `mode`. Without `replace`
    an existing file is an error (checked atomically with link())."""
    try:
        _write_file(path, data, mode, replace=replace)
    except OSError as exc:  # named by the file the user asked for, not our temp file
        raise PkiError(f"{path}: cannot write ({exc.strerror})") from None


def _write_file(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise PkiError(f"{path} already exists (use --force to replace it)") from None
            finally:
                os.unlink(tmp)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def refuse_existing(paths: Sequence[Path], force: bool) -> None:
    if force:
        return
    for p in paths:
        if p.exists():
            raise PkiError(f"{p} already exists (use --force to replace it)")


def make_dir(path: Path, mode: int) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not path.is_dir():
            raise PkiError(f"{path} exists and is not a folder") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot create folder ({exc.strerror})") from None
