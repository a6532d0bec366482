"""Revocation by the CA (engine.pki.ca): ``pki revoke`` and ``pki crl``, and the signing of
DIR/crl.pem (RFC 5280 §5: CRL number, authority key identifier, reason codes)."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from cryptography import x509

from engine.secret import Secret

from .ca_keys import _pem, _sign_hash
from .ca_store import (
    DEFAULT_CRL_DAYS,
    REVOCATION_REASONS,
    CertEntry,
    Clock,
    _aware,
    _days_after,
    _entry,
    _index_path,
    _load_ca,
    _now,
    _save_index,
    _toml_time,
    utc_now,
)
from .errors import PkiError
from .files import write_file

def parse_serial(text: str) -> int:
    """A serial as ``pki list`` prints it (hex), with optional 0x or colons."""
    t = text.strip().lower().removeprefix("0x").replace(":", "")
    if not t or not re.fullmatch(r"[0-9a-f]+", t):
        raise PkiError(f"{text!r} is neither a certificate name nor a hex serial")
    return int(t, 16)


def _find(index: dict, serial_or_name: str, where: str) -> int:
    by_name = [i for i, c in enumerate(index["certs"]) if c.get("name") == serial_or_name]
    if by_name:
        live = [i for i in by_name if "revoked" not in index["certs"][i]]
        if len(live) == 1:
            return live[0]
        if not live:
            return by_name[-1]
        serials = ", ".join(str(index["certs"][i]["serial"]) for i in live)
        raise PkiError(f"several valid certificates are named {serial_or_name!r} (serials {serials}); give the serial")
    serial = parse_serial(serial_or_name)
    for i, c in enumerate(index["certs"]):
        if int(str(c.get("serial", "0")), 16) == serial:
            return i
    raise PkiError(f"{where}: no certificate named or with serial {serial_or_name!r}")


def revoke(
    dir: str | os.PathLike,
    serial_or_name: str,
    reason: str = "unspecified",
    *,
    ca_passphrase: Secret | None = None,
    clock: Clock = utc_now,
) -> CertEntry:
    """Mark a certificate revoked and publish a new CRL (DIR/crl.pem)."""
    d = Path(dir)
    if reason not in REVOCATION_REASONS:
        raise PkiError(f"unknown revocation reason {reason!r} (one of {', '.join(REVOCATION_REASONS)})")
    index, ca_cert, ca_key = _load_ca(d, ca_passphrase)
    i = _find(index, serial_or_name, str(_index_path(d)))
    raw = index["certs"][i]
    if "revoked" in raw:
        raise PkiError(f"certificate {raw['name']!r} (serial {raw['serial']}) was already revoked on "
                       f"{_aware(raw['revoked']):%Y-%m-%d %H:%M UTC} (if crl.pem was not written then, "
                       f"`pki crl` signs it again)")
    now = _now(clock)
    raw["revoked"] = _toml_time(now)
    raw["reason"] = reason
    _publish_crl(d, index, ca_cert, ca_key, int(index["ca"].get("crl_days", DEFAULT_CRL_DAYS)), now)
    return _entry(raw, str(_index_path(d)))


def crl(
    dir: str | os.PathLike,
    days: int = DEFAULT_CRL_DAYS,
    *,
    ca_passphrase: Secret | None = None,
    clock: Clock = utc_now,
) -> Path:
    """Sign a fresh CRL valid for `days` into DIR/crl.pem; returns its path."""
    d = Path(dir)
    if days < 1:
        raise PkiError(f"--days must be at least 1 (got {days})")
    index, ca_cert, ca_key = _load_ca(d, ca_passphrase)
    index["ca"]["crl_days"] = days
    return _publish_crl(d, index, ca_cert, ca_key, days, _now(clock))


def _publish_crl(d: Path, index: dict, ca_cert: x509.Certificate, ca_key, days: int, now: datetime) -> Path:
    number = int(index["ca"].get("crl_number", 0)) + 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(_days_after(now, days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
    )
    for raw in index["certs"]:
        if "revoked" not in raw:
            continue
        rb = x509.RevokedCertificateBuilder().serial_number(int(str(raw["serial"]), 16)).revocation_date(_aware(raw["revoked"]))
        flag = REVOCATION_REASONS.get(str(raw.get("reason", "unspecified")), x509.ReasonFlags.unspecified)
        if flag is not x509.ReasonFlags.unspecified:
            rb = rb.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(rb.build())
    signed = builder.sign(ca_key, _sign_hash(ca_key))
    path = d / "crl.pem"
    # Index first: a crash between the two leaves a CRL number that is skipped, never reused.
    index["ca"]["crl_number"] = number
    _save_index(d, index)
    write_file(path, _pem(signed), 0o644, replace=True)
    return path
