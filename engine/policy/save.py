"""Saving policies: validate first, then replace the file atomically, keeping a ``.bak``.

A policy that does not validate is never written (:class:`PolicyError`). The
write goes to a temporary file in the same folder, is fsync'ed, and renamed
over the old file, whose previous content stays as ``PATH.bak``; the folder is
fsync'ed so the rename survives a crash. On any failure the old file is left
as it was and the temporary file is removed.

Every save that changes a file is recorded in the change journal (who, when,
the diff: engine.ops.journal) when the policy has a state folder.
:func:`save_policy` keeps an existing file's comments and layout.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from engine.ops import journal
from engine.policy.model import Policy
from engine.policy.parse import parse_policy
from engine.policy.serialize import policy_to_toml, update_toml

NEW_FILE_MODE = 0o644
"""Mode of a newly created policy file (policies hold no secrets; an existing file keeps its mode)."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _backup(path: Path) -> None:
    bak = path.with_name(path.name + ".bak")
    try:
        bak.unlink()
    except FileNotFoundError:
        pass
    try:
        os.link(path, bak)  # the old inode lives on as .bak once the new file is renamed in
    except OSError:
        # A copy with the old file's mode: a secrets file's backup is no more readable than it was.
        fd = os.open(bak, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, "wb") as f:
            f.write(path.read_bytes())


def atomic_write(path: str | os.PathLike, data: bytes, *, backup: bool = True, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync folder). ``mode``: the
    file's mode from the first moment it holds ``data`` (a secrets file: 0600, never readable by others
    in between); without it an existing file keeps its mode and a new one gets NEW_FILE_MODE."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:  # name the file asked for, not the temporary one (a missing folder, no access)
        raise type(exc)(exc.errno, exc.strerror, str(target)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        exists = target.exists()
        if mode is not None:
            os.chmod(tmp, mode)
        elif exists:
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        else:
            os.chmod(tmp, NEW_FILE_MODE)
        if exists and backup:
            _backup(target)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


def _read(path: str | os.PathLike) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def save_text(text: str, path: str | os.PathLike, *, load_secrets: bool = True, via: str = "console",
              who: journal.Who | None = None) -> Policy:
    """Validate ``text`` as the policy at ``path`` and write it exactly as typed. Returns the parsed policy.
    Raises PolicyError (nothing written) when it does not validate. ``via`` and ``who`` go into the
    change journal (default: this process's user)."""
    policy = parse_policy(text, path, load_secrets=load_secrets, strict_secrets_mode=False)
    old = _read(path)
    atomic_write(path, text.encode("utf-8"))
    journal.record(policy, action="save", via=via, old_text=old, new_text=text, who=who)
    return policy


def save_policy(policy: Policy, path: str | os.PathLike, *, load_secrets: bool = True, via: str = "console",
                who: journal.Who | None = None) -> Policy:
    """Serialize ``policy`` (secrets are never written), validate, and save it atomically. An existing
    file keeps its comments and layout where the meaning did not change."""
    old = _read(path)
    text = policy_to_toml(policy) if old is None else update_toml(old, policy, os.fspath(path))
    return save_text(text, path, load_secrets=load_secrets, via=via, who=who)
