"""Where a policy's keys and certificates live, what they are and when they
expire: for ``doc`` and ``audit``. Reads files; never a secret's value (a
private key file is only stat()ed, its certificate tells the key's type).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from engine.policy.model import Policy


@dataclass(frozen=True)
class CredentialFile:
    role: str
    """What the policy uses it for: ``our certificate (branch)``, ``trusted CA (branch)``, ``CRL``,
    ``private key [private.gw]``, ``secrets file``."""
    path: str
    """As the policy names it (relative to the policy's folder)."""
    exists: bool
    mode: str = ""
    """Octal permission bits, e.g. 0600."""
    subject: str = ""
    issuer: str = ""
    key: str = ""
    """e.g. ECDSA P-256, RSA 3072."""
    not_before: datetime | None = None
    not_after: datetime | None = None
    mtime: float | None = None
    problem: str = ""

    def days_left(self, now: datetime) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - now).total_seconds() / 86400


def key_description(public_key) -> str:
    """``RSA 3072``, ``ECDSA secp256r1``, ``Ed25519``: by the key's attributes, since only engine.crypto and
    engine.pki import cryptography (tests/engine/test_layers.py)."""
    curve = getattr(public_key, "curve", None)
    if curve is not None:
        return f"ECDSA {curve.name}"
    kind = type(public_key).__name__
    if "RSA" in kind:
        return f"RSA {public_key.key_size}"
    for name in ("Ed25519", "Ed448"):
        if name in kind:
            return name
    return kind


def _base(policy: Policy) -> Path:
    return Path(policy.path).parent if policy.path else Path.cwd()


def _stat(path: Path) -> tuple[bool, str, float | None]:
    try:
        st = os.stat(path)
    except OSError:
        return False, "", None
    return True, f"{stat.S_IMODE(st.st_mode):04o}", st.st_mtime


def _cert(role: str, shown: str, path: Path) -> list[CredentialFile]:
    from engine.pki.certs import load_certificate_file
    from engine.pki.dn import format_name
    from engine.pki.errors import PkiError

    exists, mode, mtime = _stat(path)
    if not exists:
        return [CredentialFile(role, shown, False, problem="not found")]
    try:
        certs = load_certificate_file(path)
    except (PkiError, OSError, ValueError) as exc:
        return [CredentialFile(role, shown, True, mode, mtime=mtime, problem=f"unreadable: {exc}")]
    out = []
    for c in certs[:1]:  # the end entity (or the CA) first; chains list it first
        out.append(CredentialFile(role, shown, True, mode, format_name(c.subject), format_name(c.issuer),
                                  key_description(c.public_key()), c.not_valid_before_utc, c.not_valid_after_utc,
                                  mtime))
    return out


def credential_files(policy: Policy) -> list[CredentialFile]:
    """Every certificate, CA, CRL, private key and secrets file the policy names, in policy order."""
    base = _base(policy)
    out: list[CredentialFile] = []
    seen: set[tuple[str, str]] = set()

    def add(items: list[CredentialFile]) -> None:
        for item in items:
            if (item.role, item.path) not in seen:
                seen.add((item.role, item.path))
                out.append(item)

    for c in policy.connections:
        for name in c.local.certs:
            add(_cert(f"our certificate ({c.name})", name, base / name))
        for name in c.remote.cacerts:
            add(_cert(f"trusted CA ({c.name})", name, base / name))
    for name in policy.engine.crls:
        exists, mode, mtime = _stat(base / name)
        add([CredentialFile("CRL", name, exists, mode, mtime=mtime, problem="" if exists else "not found")])
    if policy.engine.secrets:
        exists, mode, mtime = _stat(base / policy.engine.secrets)
        problem = "" if exists else "not found"
        if exists and int(mode, 8) & 0o077:
            problem = f"mode {mode}: group or others may read it"
        add([CredentialFile("secrets file", policy.engine.secrets, exists, mode, mtime=mtime, problem=problem)])
    secrets_dir = Path(policy.secrets.path).parent if policy.secrets.path else base
    for p in policy.secrets.private:
        path = Path(p.file) if os.path.isabs(p.file) else secrets_dir / p.file
        shown = os.path.relpath(path, base) if not os.path.isabs(p.file) else p.file
        exists, mode, mtime = _stat(path)
        problem = "" if exists else "not found"
        if exists and int(mode, 8) & 0o077:
            problem = f"mode {mode}: group or others may read it"
        add([CredentialFile(f"private key [private.{p.name}]" + (" (encrypted)" if p.passphrase else ""), shown,
                            exists, mode, mtime=mtime, problem=problem)])
    return out


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
