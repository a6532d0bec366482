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


def write_files(items: Sequence[tuple[Path, bytes, int]], *, replace: bool) -> None:
    """Write several files (path, data, mode) as one: every temporary file is written and synced
    before the first is renamed in, so a full disk or a write error replaces none of them (a key and
    its certificate stay a pair)."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data, mode in items:
            try:
                temps.append((_temp_file(path, data, mode), path))
            except OSError as exc:
                raise PkiError(f"{path}: cannot write ({exc.strerror})") from None
        while temps:
            tmp, path = temps[0]
            try:
                _install(tmp, path, replace)
            except OSError as exc:
                raise PkiError(f"{path}: cannot write ({exc.strerror})") from None
            temps.pop(0)
            _fsync_dir(path.parent)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)


def _temp_file(path: Path, data: bytes, mode: int) -> Path:
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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _install(tmp: Path, path: Path, replace: bool) -> None:
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise PkiError(f"{path} already exists (use --force to replace it)") from None
    finally:
        os.unlink(tmp)


def _write_file(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    tmp = _temp_file(path, data, mode)
    try:
        _install(tmp, path, replace)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
    except FileNotFoundError:
        # Only the last folder is created (a mistyped --dir must not grow a tree): name the missing one.
        missing = path.parent
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        raise PkiError(f"{path}: cannot create folder: the folder {missing} does not exist") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot create folder ({exc.strerror})") from None
