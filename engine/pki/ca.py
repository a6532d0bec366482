"""A small certificate authority for IKE certificates (``ipsec-console pki``).

Folder layout (``--dir``, default ``./pki``)::

    DIR/ca.crt              the CA certificate (PEM)
    DIR/private/            mode 0700
    DIR/private/ca.key      the CA key (PKCS#8 PEM, mode 0600, optionally encrypted)
    DIR/private/NAME.key    keys of issued certificates (PKCS#8 PEM, mode 0600)
    DIR/certs/NAME.crt      issued certificates (PEM)
    DIR/index.toml          what was issued and revoked (the CA's database)
    DIR/crl.pem             the latest CRL (PEM), rewritten by `crl` and `revoke`

Keys are created with mode 0600 by os.open (never chmod-ed afterwards).
Existing files are never replaced unless `force` is given; the index and the
CRL are the CA's own state and are rewritten atomically (temp file, fsync,
rename). Times come from an injectable `clock` so tests can travel in time.

Issued certificates carry what strongSwan, Windows and macOS clients expect:
subjectAltName (the CN is added when it is a host name, address or e-mail),
keyUsage digitalSignature (critical), extendedKeyUsage serverAuth or
clientAuth plus ikeIntermediate (1.3.6.1.5.5.7.3.17), basicConstraints
CA:FALSE, subject and authority key identifiers, and the CRL URI when the CA
has one.

Here: making the CA and issuing (``init-ca``, ``issue``). Keys live in
engine.pki.ca_keys, the folder's index and loading the CA in
engine.pki.ca_store, revocation and the CRL in engine.pki.ca_crl; every
name is re-exported from here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from engine.secret import Secret

from .ca_crl import *  # noqa: F403 - re-exported: revoke, crl, parse_serial
from .ca_crl import _find, _publish_crl  # noqa: F401
from .ca_keys import *  # noqa: F403 - re-exported: generate_key, KEY_TYPES
from .ca_keys import KEY_TYPES, _key_pem, _pem, _sign_hash, generate_key
from .ca_store import *  # noqa: F403 - re-exported: CertEntry, CaInfo, list_certs, ca_info, ...
from .ca_store import (  # noqa: F401
    DEFAULT_CRL_DAYS,
    CaInfo,
    CertEntry,
    Clock,
    _aware,
    _check_is_ca,
    _days_after,
    _entry,
    _index_path,
    _issued_count,
    _load_ca,
    _load_index,
    _now,
    _save_index,
    _toml_time,
    utc_now,
)
from .certs import load_certificate_file, san_strings  # noqa: F401
from .dn import Dn, dn_to_name, format_name, parse_dn
from .errors import PkiError
from .files import make_dir, refuse_existing, write_file, write_files  # noqa: F401
from .keys import load_private_key_file  # noqa: F401
from .sans import cn_as_san, parse_san

CertKind = Literal["server", "client"]

IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")
"""id-kp-ipsecIKE / "IP security IKE intermediate" (RFC 4945 §5.1.3.12), wanted by Windows and macOS."""

CLOCK_SKEW = timedelta(minutes=5)
"""Certificates start this much before `now`, so peers whose clock is a little behind accept them."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


def _crl_dp(uri: str, where: str) -> x509.CRLDistributionPoints:
    """The CRL distribution point of issued certificates; `uri` must be an ASCII URI peers can fetch."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://[!-~]+", uri):
        raise PkiError(f"{where}: CRL URI {uri!r} is not an ASCII URI like http://crl.example.org/ca.crl")
    try:
        return x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(uri)], None, None, None)])
    except ValueError as exc:
        raise PkiError(f"{where}: CRL URI {uri!r}: {exc}") from None


def _ca_subject(name: str) -> x509.Name:
    if "=" in name:
        return dn_to_name(name)
    # a plain common name is taken as it is: its commas, quotes and backslashes are not DN syntax
    cn = name.strip()
    if not cn:
        raise PkiError("the CA name is empty")
    return Dn((((NameOID.COMMON_NAME.dotted_string, cn),),)).to_name()


def init_ca(
    dir: str | os.PathLike,
    name: str,
    key_type: str = "ecdsa-p256",
    days: int = 3650,
    *,
    passphrase: Secret | None = None,
    crl_uri: str | None = None,
    force: bool = False,
    clock: Clock = utc_now,
) -> CaInfo:
    """Create a self-signed CA in `dir`. `name` is a DN (``O=Acme, CN=Acme CA``)
    or a plain common name. `crl_uri` goes into issued certificates as their
    CRL distribution point."""
    d = Path(dir)
    if days < 1:
        raise PkiError(f"--days must be at least 1 (got {days})")
    subject = _ca_subject(name)
    if crl_uri is not None:
        _crl_dp(crl_uri, "--crl-uri")
    key_path, cert_path = d / "private" / "ca.key", d / "ca.crt"
    refuse_existing([cert_path, key_path, _index_path(d)], force)
    if force and _index_path(d).exists():
        issued = _issued_count(d)
        if issued:
            # The new index would forget them while their files stay: `list` would say none were issued,
            # `issue` of the same name that one exists, and nothing could revoke them any more.
            raise PkiError(f"{d}: the CA being replaced issued {issued} certificate{'s' if issued != 1 else ''} "
                           f"(pki list shows them): move the folder aside and start the new CA in another one")
    key = generate_key(key_type)
    now = _now(clock)
    not_after = _days_after(now, days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = builder.sign(key, _sign_hash(key))
    make_dir(d, 0o755)
    make_dir(d / "private", 0o700)
    make_dir(d / "certs", 0o755)
    ca = {"subject": format_name(subject), "key_type": key_type, "crl_number": 0, "crl_days": DEFAULT_CRL_DAYS}
    if crl_uri:
        ca["crl_uri"] = crl_uri
    index = {"version": 1, "ca": ca, "certs": []}
    created: list[Path] = []
    try:
        created = [p for p in (key_path, cert_path) if not os.path.lexists(p)]  # a dangling link is not ours
        write_files([(key_path, _key_pem(key, passphrase), 0o600), (cert_path, _pem(cert), 0o644)], replace=force)
        _save_index(d, index)
    except BaseException:
        for p in created:  # no CA key without its certificate (a retry would say "ca.key already exists")
            p.unlink(missing_ok=True)
        raise
    if (d / "crl.pem").exists():
        # A CRL of the replaced CA signed by another key: peers would find no valid CRL for this CA.
        _publish_crl(d, index, cert, key, DEFAULT_CRL_DAYS, now)
    return CaInfo(d, format_name(subject), key_type, cert.not_valid_after_utc, crl_uri)


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name) or name in ("ca",):
        raise PkiError(f"{name!r} cannot be a file name here (letters, digits, . _ @ + -; not 'ca'); use --name")
    return name


def issue(
    dir: str | os.PathLike,
    cn: str,
    sans: Sequence[str] = (),
    kind: str = "server",
    key_type: str | None = None,
    days: int = 730,
    *,
    name: str | None = None,
    subject: str | None = None,
    ca_passphrase: Secret | None = None,
    key_passphrase: Secret | None = None,
    force: bool = False,
    clock: Clock = utc_now,
) -> CertEntry:
    """Issue a server or client certificate and its key (certs/NAME.crt, private/NAME.key).

    The subject is the CA's DN with its CN replaced by `cn`, unless `subject`
    (a full DN) is given. `key_type` defaults to the CA's. Validity ends at
    the CA's end at the latest.
    """
    d = Path(dir)
    if kind not in ("server", "client"):
        raise PkiError(f"kind must be server or client (got {kind!r})")
    if days < 1:
        raise PkiError(f"--days must be at least 1 (got {days})")
    if not cn.strip():
        raise PkiError("the common name is empty")
    name = _check_name(name or cn)
    index, ca_cert, ca_key = _load_ca(d, ca_passphrase)
    key_type = key_type or str(index["ca"].get("key_type") or "ecdsa-p256")
    if key_type not in KEY_TYPES:
        raise PkiError(f"unknown key type {key_type!r} (one of {', '.join(KEY_TYPES)})")
    cert_path, key_path = d / "certs" / f"{name}.crt", d / "private" / f"{name}.key"
    refuse_existing([cert_path, key_path], force)

    if subject is not None:
        subject_name = dn_to_name(subject)
    else:
        base = [(oid, v) for oid, v in parse_dn(format_name(ca_cert.subject)) if oid != NameOID.COMMON_NAME.dotted_string]
        try:
            x509.NameAttribute(NameOID.COMMON_NAME, cn)  # its checks, with a message naming the CN
        except ValueError as exc:  # e.g. longer than the 64 characters X.520 allows
            raise PkiError(f"common name {cn!r}: {exc} (use a shorter CN and put the long name in --san)") from None
        # through Dn, so the CA's attributes keep the string types they were issued with
        subject_name = Dn(tuple(((o, v),) for o, v in base) + (((NameOID.COMMON_NAME.dotted_string, cn),),)).to_name()
    general_names: list[x509.GeneralName] = []
    cn_san = cn_as_san(cn)
    if cn_san is not None:
        general_names.append(cn_san)
    for s in sans:
        g = parse_san(s)
        if g not in general_names:
            general_names.append(g)
    if not general_names:
        raise PkiError(f"{cn!r} is not a host name, address or e-mail: give at least one --san (peers match IDs against SANs)")

    now = _now(clock)
    try:
        cut = now + timedelta(days=days) > ca_cert.not_valid_after_utc
    except OverflowError:  # past the year 9999: the CA's end comes first anyway
        cut = True
    not_after = ca_cert.not_valid_after_utc if cut else now + timedelta(days=days)
    if not_after <= now:
        raise PkiError(f"the CA certificate expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}; renew the CA first")
    used = {int(str(c.get("serial", "0")), 16) for c in index["certs"]}
    serial = x509.random_serial_number()
    while serial in used:
        serial = x509.random_serial_number()
    key = generate_key(key_type)
    eku = [ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH, IKE_INTERMEDIATE]
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectAlternativeName(general_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
    )
    crl_uri = index["ca"].get("crl_uri")
    if crl_uri:
        builder = builder.add_extension(_crl_dp(str(crl_uri), f"{_index_path(d)}: [ca] crl_uri"), critical=False)
    cert = builder.sign(ca_key, _sign_hash(ca_key))

    created: list[Path] = []
    try:
        created = [p for p in (key_path, cert_path) if not os.path.lexists(p)]  # a dangling link is not ours
        # Both written before either is renamed in: a full disk never leaves a new key beside the old
        # certificate (--force would have lost the working key).
        write_files([(key_path, _key_pem(key, key_passphrase), 0o600), (cert_path, _pem(cert), 0o644)],
                    replace=force)
        entry = CertEntry(
            name=name, serial=serial, subject=format_name(subject_name), sans=tuple(san_strings(cert)), kind=kind,
            key_type=key_type, not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            cut_at_ca_end=cut,
        )
        # --force replaced the files of a certificate still valid: it is revoked as superseded (RFC 5280
        # §5.3.1), or it would stay good for a peer until it expires, its key maybe the reason for the new one.
        replaced = [c for c in index["certs"] if c.get("name") == name and "revoked" not in c]
        for old in replaced:
            old["revoked"] = _toml_time(now)
            old["reason"] = "superseded"
        index["certs"].append(
            {
                "name": entry.name, "serial": entry.serial_hex, "subject": entry.subject, "sans": list(entry.sans),
                "kind": kind, "key_type": key_type, "not_before": _toml_time(entry.not_before),
                "not_after": _toml_time(entry.not_after),
            }
        )
        if replaced:
            _publish_crl(d, index, ca_cert, ca_key, int(index["ca"].get("crl_days", DEFAULT_CRL_DAYS)), now)
        else:
            _save_index(d, index)
    except BaseException:
        for p in created:  # no half-issued certificate left behind
            p.unlink(missing_ok=True)
        raise
    return entry
