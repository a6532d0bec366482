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
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from engine.secret import Secret

from .certs import load_certificate_file, san_strings
from .sans import cn_as_san, parse_san
from .dn import Dn, dn_to_name, format_name, parse_dn
from .errors import PkiError
from .files import make_dir, refuse_existing, write_file, write_files
from .keys import load_private_key_file

KeyType = Literal["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "ed25519"]
KEY_TYPES: tuple[str, ...] = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "ed25519")
CertKind = Literal["server", "client"]
Clock = Callable[[], datetime]

IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")
"""id-kp-ipsecIKE / "IP security IKE intermediate" (RFC 4945 §5.1.3.12), wanted by Windows and macOS."""

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

CLOCK_SKEW = timedelta(minutes=5)
"""Certificates start this much before `now`, so peers whose clock is a little behind accept them."""
DEFAULT_CRL_DAYS = 30
MAX_PASSPHRASE = 1023
"""The longest key passphrase OpenSSL (through cryptography) encrypts with."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


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


# --- keys --------------------------------------------------------------------


def generate_key(key_type: str):
    """A fresh private key of one of KEY_TYPES."""
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise PkiError(f"unknown key type {key_type!r} (one of {', '.join(KEY_TYPES)})")


def _sign_hash(key) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _key_pem(key, passphrase: Secret | None) -> bytes:
    if passphrase is not None and len(passphrase.reveal()) > MAX_PASSPHRASE:
        # OpenSSL's limit: cryptography raises ValueError, a traceback out of issue or init-ca
        raise PkiError(f"the key passphrase is longer than {MAX_PASSPHRASE} bytes")
    enc = serialization.BestAvailableEncryption(passphrase.reveal()) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _pem(obj) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


# --- index -------------------------------------------------------------------


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


# --- the CA ------------------------------------------------------------------


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


# --- issuing -----------------------------------------------------------------


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


# --- revocation --------------------------------------------------------------


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


# --- listing -----------------------------------------------------------------


def list_certs(dir: str | os.PathLike) -> list[CertEntry]:
    """Everything the CA issued, oldest first (``pki list``)."""
    d = Path(dir)
    index = _load_index(d)
    where = str(_index_path(d))
    return [_entry(raw, where) for raw in index["certs"]]
