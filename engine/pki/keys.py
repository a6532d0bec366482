"""Private key files: mode 0600 enforced, then parsed by engine.crypto.signature."""

from __future__ import annotations

import os
import stat

from engine.crypto.signature import PrivateKey, PrivateKeyError, load_private_key
from engine.policy.model import PrivateKeySecret
from engine.secret import Secret

from .errors import PkiError


def check_key_file_mode(path: str | os.PathLike) -> None:
    """Refuse a key file that group or others may read or write (strongSwan's advice, enforced)."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise PkiError(f"{p}: cannot read private key ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise PkiError(f"{p}: private key is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise PkiError(f"{p}: private key has mode {mode:04o}; only its owner may read it (chmod 600 {p})")


def load_private_key_file(path: str | os.PathLike, passphrase: Secret | None = None) -> PrivateKey:
    """Read a PEM/DER private key file after checking it is mode 0600 (or stricter)."""
    p = os.fspath(path)
    check_key_file_mode(p)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PkiError(f"{p}: cannot read private key ({exc.strerror})") from None
    try:
        return load_private_key(data, passphrase, source=p)
    except PrivateKeyError as exc:
        raise PkiError(str(exc)) from None


def load_private_key_secret(entry: PrivateKeySecret, base_dir: str | os.PathLike | None = None) -> PrivateKey:
    """The key of a secrets-file ``[private.<name>]`` entry; a relative `file` is
    taken from `base_dir` (the secrets file's folder)."""
    path = entry.file
    if base_dir is not None and not os.path.isabs(path):
        path = os.path.join(os.fspath(base_dir), path)
    return load_private_key_file(path, entry.passphrase)
