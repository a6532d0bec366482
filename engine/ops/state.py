"""Where the engine keeps what must outlive a restart: the change journal and
the usage counters the audit reads (``STATE_DIR/journal.jsonl``,
``STATE_DIR/usage.json``).

STATE_DIR is, in order: ``[engine] state_dir`` (relative to the policy file),
``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``, set for the service), or
``/var/lib/ipsec-console`` when that folder exists (the unit creates it).
Otherwise there is no state: nothing is written, and ``audit`` says how to
turn it on. So a lab or a test never writes outside its own folders.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # engine.policy imports this module (through save and the journal)
    from engine.policy.model import Policy

DEFAULT_STATE_DIR = Path("/var/lib/ipsec-console")


def state_dir(policy: Policy, env: Mapping[str, str] | None = None, *, create: bool = False) -> Path | None:
    """The state folder for ``policy`` (see the module docstring), or None when there is none.
    ``create``: make a configured folder (mode 0700) if it is missing; OSError when that fails (the
    path is a file, a parent is not writable)."""
    env = os.environ if env is None else env
    configured = getattr(policy.engine, "state_dir", None)
    if configured:
        base = Path(policy.path).parent if policy.path else Path.cwd()
        folder = base / configured
    elif env.get("STATE_DIRECTORY"):
        folder = Path(env["STATE_DIRECTORY"].split(":")[0])
    elif DEFAULT_STATE_DIR.is_dir():
        return DEFAULT_STATE_DIR
    else:
        return None
    if create and not folder.is_dir():
        if folder.exists() or folder.is_symlink():
            raise NotADirectoryError(errno.ENOTDIR, "the state folder exists and is not a folder", str(folder))
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a file only its owner may read (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Always a new file: never through a link planted at that name, never an old file's mode.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileExistsError:
        tmp.unlink()  # left by a crashed process with our PID (unlink removes a link, not its target)
        fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
