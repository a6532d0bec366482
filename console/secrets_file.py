"""Writing a PSK into a policy's secrets file (mode 0600, atomically).

The file keeps its comments and other entries (tomlkit). It is written to a
temporary file created 0600 in the same folder, fsync'ed, and renamed over
the old one, whose previous content stays as ``.bak`` (same mode: a hard
link to the old inode); it never exists with a wider mode, even briefly.
Nothing here logs or returns the secret.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tomlkit

HEADER = """\
# Secrets of this host's IPsec policy: PSKs and private key references.
# Mode 0600: the engine refuses a secrets file others may read.
"""


def set_psk(path: str | os.PathLike, entry: str, ids: list[str], secret: str) -> str:
    """Write ``[ike.ENTRY] ids = IDS, secret = SECRET`` into the secrets file at ``path``.

    An entry with the same name, or with exactly these ids, is replaced. Returns the entry
    name used. Raises OSError (nothing changed) or ValueError (the file is not TOML).
    """
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = HEADER
    try:
        doc = tomlkit.parse(text)
    except Exception as exc:  # tomlkit raises several types for a broken file
        raise ValueError(f"{target}: not TOML ({exc}); fix it before adding a key") from None
    if "ike" not in doc:
        doc["ike"] = tomlkit.table(is_super_table=True)
    ike = doc["ike"]
    wanted = sorted(i.lower() for i in ids)
    for name, value in list(ike.items()):
        if name != entry and hasattr(value, "get") and sorted(str(i).lower() for i in value.get("ids", [])) == wanted:
            entry = name  # the same identities already have an entry: replace its key
            break
    table = tomlkit.table()
    table["ids"] = list(ids)
    table["secret"] = secret
    ike[entry] = table
    write_private(target, tomlkit.dumps(doc))
    return entry


def write_private(target: Path, text: str) -> None:
    """Replace ``target`` with ``text`` atomically; the file is 0600 at every moment."""
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o600)
            os.fsync(f.fileno())
        if target.exists():
            bak = target.with_name(target.name + ".bak")
            try:
                bak.unlink()
            except FileNotFoundError:
                pass
            os.link(target, bak)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
