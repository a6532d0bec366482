"""Key, certificate and CRL files looked at from outside the engine's own use of them: which of
swanctl's key folders a key belongs in, the public key of a key or certificate file (to pair
them), whether a file holds a CRL. engine.ops (swanctl import/export) reads them through here:
only engine.pki and engine.crypto import `cryptography`.

Nothing here checks a key file's mode (these are other programs' files, only looked at) and
nothing raises: an unreadable file is None, or the catch-all folder.
"""

from __future__ import annotations

import os
import re
import stat

from cryptography.hazmat.primitives import serialization

from engine.crypto.signature import PrivateKeyError, load_private_key
from engine.secret import Secret

from .certs import MAX_CREDENTIAL_FILE, load_certificates
from .errors import PkiError
from .validate import load_crls

MAX_FILE = 1 << 20
"""Key and certificate files are small: more than this is not read."""

_PEM_LABEL = re.compile(rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----")
SWANCTL_KEY_FOLDERS = ("private", "rsa", "ecdsa", "pkcs8")
"""swanctl --load-creds loads every key file in these folders of its directory (load_creds.c);
a ``secrets`` entry named after the folder (``pkcs8-gw``) only gives a file's passphrase."""


def _read(path: str | os.PathLike, limit: int = MAX_FILE) -> bytes | None:
    """A regular file's bytes (None otherwise): a FIFO or a terminal named as a key or certificate in
    swanctl.conf blocked import or export for ever (as certs.read_credential_file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO: no wait for a writer
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


def _der_items(data: bytes) -> list[int]:
    """Tags of the elements of the outer DER SEQUENCE (the first two), [] when it is not one."""
    def header(pos: int) -> tuple[int, int, int] | None:
        if pos + 2 > len(data):
            return None
        tag, n = data[pos], data[pos + 1]
        pos += 2
        if n & 0x80:
            width = n & 0x7F
            if width == 0 or width > 4 or pos + width > len(data):
                return None
            n = int.from_bytes(data[pos:pos + width], "big")
            pos += width
        return tag, pos, n

    outer = header(0)
    if outer is None or outer[0] != 0x30:
        return []
    tags, pos = [], outer[1]
    while len(tags) < 2:
        item = header(pos)
        if item is None:
            break
        tags.append(item[0])
        pos = item[1] + item[2]
    return tags


def swanctl_key_folder(path: str | os.PathLike) -> str:
    """The swanctl folder a key file is loaded from as what it is: ``pkcs8`` (PKCS#8, encrypted or
    not, PEM or DER), ``rsa`` / ``ecdsa`` (traditional PEM), else ``private`` (any format)."""
    data = _read(path)
    if data is None:
        return "private"
    m = _PEM_LABEL.search(data)
    if m:
        return {b"RSA PRIVATE KEY": "rsa", b"EC PRIVATE KEY": "ecdsa"}.get(m.group(1), "pkcs8")
    tags = _der_items(data)
    # PrivateKeyInfo: INTEGER version, SEQUENCE algorithm; EncryptedPrivateKeyInfo: SEQUENCE first.
    if tags[:1] == [0x30] or tags == [0x02, 0x30]:
        return "pkcs8"
    return "private"


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_file_public_der(path: str | os.PathLike, passphrase: Secret | None = None) -> bytes | None:
    """The SubjectPublicKeyInfo (DER) of a private key file; None when it cannot be read (missing,
    not a key, encrypted and no right passphrase)."""
    data = _read(path)
    if data is None:
        return None
    try:
        return _spki(load_private_key(data, passphrase, source=os.fspath(path)).public_key())
    except (PrivateKeyError, ValueError, TypeError):
        return None


def certificate_file_public_der(path: str | os.PathLike) -> bytes | None:
    """The SubjectPublicKeyInfo (DER) of the first certificate of a file; None when unreadable."""
    data = _read(path)
    if data is None:
        return None
    try:
        return _spki(load_certificates(data, os.fspath(path))[0].public_key())
    except (PkiError, ValueError, IndexError):
        return None


def is_crl_file(path: str | os.PathLike) -> bool:
    """A file that holds a CRL (PEM or DER), as swanctl --load-creds loads from x509crl/ (at most
    MAX_CREDENTIAL_FILE, as the engine reads it: a large CA's CRL is megabytes)."""
    data = _read(path, MAX_CREDENTIAL_FILE)
    if data is None:
        return False
    try:
        return bool(load_crls(data, os.fspath(path)))
    except (PkiError, ValueError):
        return False
