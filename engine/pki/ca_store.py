"""The CA folder's state (engine.pki.ca): the index of what was issued and revoked
(DIR/index.toml, checked whole when read, rewritten atomically), the CA certificate and key as
loaded for signing, and the rows ``pki list`` shows."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from engine.secret import Secret

from .certs import load_certificate_file
from .dn import format_name
from .errors import PkiError
from .files import write_file
from .keys import load_private_key_file

Clock = Callable[[], datetime]

# CLI spelling -> RFC 5280 reason. "unspecified" is written as no reason code (RFC 5280 §5.3.1).
REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "ca-compromise": x509.ReasonFlags.ca_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "certificate-hold": x509.ReasonFlags.certificate_hold,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}

DEFAULT_CRL_DAYS = 30


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(timezone.utc)


def _now(clock: Clock) -> datetime:
    t = clock()
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)



@dataclass(frozen=True)
class CertEntry:
    """One certificate the CA issued (a row of ``pki list``)."""

    name: str
    """File name stem: certs/NAME.crt, private/NAME.key."""
    serial: int
    subject: str
    """Subject DN, strongSwan style."""
    sans: tuple[str, ...]
    """``DNS:x``, ``email:x``, ``IP:x``."""
    kind: str
    """``server`` or ``client``."""
    key_type: str
    not_before: datetime
    not_after: datetime
    revoked: datetime | None = None
    """When it was revoked; None while valid."""
    reason: str | None = None
    """Revocation reason (CLI spelling), if revoked."""
    cut_at_ca_end: bool = False
    """Just issued, and the validity asked for reached past the CA's own end: it ends with the CA
    (a certificate cannot outlive its issuer). Never stored in the index."""

    @property
    def serial_hex(self) -> str:
        return f"{self.serial:x}"


@dataclass(frozen=True)
class CaInfo:
    """The CA of a folder."""

    dir: Path
    subject: str
    key_type: str
    not_after: datetime
    crl_uri: str | None = None

    @property
    def cert_path(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def key_path(self) -> Path:
        return self.dir / "private" / "ca.key"


def _index_path(d: Path) -> Path:
    return d / "index.toml"


def _load_index(d: Path) -> dict:
    p = _index_path(d)
    if not d.is_dir():
        what = "is not a folder" if d.exists() else "does not exist"
        raise PkiError(f"{d}: no CA here: the folder {d} {what} (give --dir the CA's folder, or create one "
                       "with `ipsec-console pki init-ca`)")
    if not (d / "ca.crt").exists():
        raise PkiError(f"{d}: no CA here (run `ipsec-console pki init-ca` first, or give --dir)")
    try:
        with open(p, "rb") as f:
            index = tomllib.load(f)
    except FileNotFoundError:
        raise PkiError(f"{p}: missing (the CA folder is incomplete)") from None
    except tomllib.TOMLDecodeError as exc:
        raise PkiError(f"{p}: not valid TOML ({exc})") from None
    if not isinstance(index.get("ca"), dict) or not isinstance(index.get("certs", []), list):
        raise PkiError(f"{p}: expected a [ca] table and [[certs]] entries")
    index.setdefault("certs", [])
    # Check it all now: a damaged index is one clear error, not a traceback half-way through a command.
    for key, least in (("crl_number", 0), ("crl_days", 1)):
        v = index["ca"].get(key, least)
        if not isinstance(v, int) or isinstance(v, bool) or v < least:
            raise PkiError(f"{p}: [ca] {key} must be a whole number of at least {least} (got {v!r})")
    for n, raw in enumerate(index["certs"], 1):
        if not isinstance(raw, dict):
            raise PkiError(f"{p}: certificate entry {n} is not a table")
        e = _entry(raw, f"{p}: certificate entry {n}")
        if e.reason is not None and e.reason not in REVOCATION_REASONS:
            raise PkiError(f"{p}: certificate entry {n}: unknown revocation reason {e.reason!r}")
    return index


def _save_index(d: Path, index: dict) -> None:
    write_file(_index_path(d), tomli_w.dumps(index).encode(), 0o644, replace=True)


def _entry(raw: dict, where: str) -> CertEntry:
    try:
        if not isinstance(raw["name"], str) or not isinstance(raw["serial"], str):
            raise TypeError("name and serial must be strings")
        return CertEntry(
            name=raw["name"],
            serial=int(str(raw["serial"]), 16),
            subject=str(raw["subject"]),
            sans=tuple(str(s) for s in raw.get("sans", ())),
            kind=str(raw.get("kind", "server")),
            key_type=str(raw.get("key_type", "")),
            not_before=_aware(raw["not_before"]),
            not_after=_aware(raw["not_after"]),
            revoked=_aware(raw["revoked"]) if "revoked" in raw else None,
            reason=str(raw["reason"]) if "reason" in raw else None,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise PkiError(f"{where}: bad certificate entry ({exc!r})") from None


def _aware(t) -> datetime:
    if not isinstance(t, datetime):
        raise ValueError(f"{t!r} is not a date-time")
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _days_after(now: datetime, days: int, option: str = "--days") -> datetime:
    """`now` plus `days`, or a clear error when that is past what X.509 can say (the year 9999)."""
    try:
        return now + timedelta(days=days)
    except OverflowError:
        raise PkiError(f"{option} {days} is too long: it ends after the year 9999") from None


def _toml_time(t: datetime) -> datetime:
    return t.astimezone(timezone.utc).replace(microsecond=0)


def _issued_count(d: Path) -> int:
    """Certificates the index of DIR lists (a damaged index counts as some: nothing is thrown away)."""
    try:
        return len(_load_index(d)["certs"])
    except PkiError:
        return 1


def ca_info(dir: str | os.PathLike) -> CaInfo:
    """The CA of a folder (for the PKI screen)."""
    d = Path(dir)
    index = _load_index(d)
    cert = load_ca_certificate(d)
    return CaInfo(d, format_name(cert.subject), str(index["ca"].get("key_type", "")), cert.not_valid_after_utc,
                  index["ca"].get("crl_uri"))


def load_ca_certificate(dir: str | os.PathLike) -> x509.Certificate:
    """DIR/ca.crt."""
    return load_certificate_file(Path(dir) / "ca.crt")[0]


def _check_is_ca(cert: x509.Certificate, path: Path) -> None:
    """A certificate that may sign others (openssl and charon reject what a non-CA signs)."""
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        is_ca = is_ca and ku.key_cert_sign
    except x509.ExtensionNotFound:
        pass
    if not is_ca:
        raise PkiError(f"{path} is not a CA certificate (no basicConstraints CA:TRUE with keyCertSign): "
                       f'"{format_name(cert.subject)}" cannot sign certificates or CRLs')


def _load_ca(d: Path, passphrase: Secret | None):
    index = _load_index(d)
    cert = load_ca_certificate(d)
    _check_is_ca(cert, d / "ca.crt")
    key = load_private_key_file(d / "private" / "ca.key", passphrase)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != cert.public_key().public_bytes(
        serialization.Encoding.DER, pub
    ):
        raise PkiError(f"{d / 'private' / 'ca.key'} is not the key of {d / 'ca.crt'}")
    return index, cert, key


def list_certs(dir: str | os.PathLike) -> list[CertEntry]:
    """Everything the CA issued, oldest first (``pki list``)."""
    d = Path(dir)
    index = _load_index(d)
    where = str(_index_path(d))
    return [_entry(raw, where) for raw in index["certs"]]
