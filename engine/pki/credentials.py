"""Credentials a policy needs for certificate authentication, loaded once
(files are read here, not in the sans-IO IKE engine): our certificates and
private keys, the CAs we trust per connection, and the CRLs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from engine.pki.certs import load_certificate_file, public_key_of
from engine.pki.errors import PkiError
from engine.pki.keys import load_private_key_secret
from engine.pki.validate import load_crl_files
from engine.policy.model import Policy


MAX_WANTED = 32


def _spki(obj) -> bytes:
    return obj.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class LocalCredentials:
    certs: list[x509.Certificate]
    """End certificate first, then intermediates (sent as CERT payloads)."""
    key: object = field(repr=False)
    """The private key matching certs[0] (never shown)."""


@dataclass
class Credentials:
    local: dict[str, LocalCredentials] = field(default_factory=dict)
    """By connection name."""
    cacerts: dict[str, list[x509.Certificate]] = field(default_factory=dict)
    """Trusted CAs by connection name."""
    crls: list = field(default_factory=list)
    """Loaded from [engine] crls."""
    fetched_crls: dict[str, list] = field(default_factory=dict)
    """CRLs the runtime fetched, by distribution point URI (engine.runtime.crlfetch); checked
    exactly as loaded ones are, each time they are used."""
    crl_status: dict[str, str] = field(default_factory=dict)
    """What the runtime's fetcher says of a URI it was asked for ("being fetched", why it failed),
    for the reason of a refused certificate. Empty when nothing fetches."""
    crl_pending: frozenset = frozenset()
    """URIs the runtime is fetching now (an IKE_AUTH naming one waits for it)."""
    crl_settled: dict[str, float] = field(default_factory=dict)
    """URI -> Unix time until which the runtime will not fetch it (a fresh CRL, a failed fetch held):
    an IKE_AUTH naming one is decided with what there is."""
    fetching: bool = False
    """A runtime fetches wanted CRLs (False: only [engine] crls count)."""
    wanted: dict[str, None] = field(default_factory=dict)
    """URIs IKE_AUTH found no current CRL for, in order, for the runtime to fetch (take_wanted)."""

    def all_crls(self) -> list:
        return [*self.crls, *(c for crls in self.fetched_crls.values() for c in crls)]

    def want(self, uris) -> None:
        for uri in uris:
            if len(self.wanted) < MAX_WANTED:  # drained after each datagram; bounded all the same
                self.wanted[uri] = None

    def take_wanted(self) -> list[str]:
        out, self.wanted = list(self.wanted), {}
        return out

    def all_cas(self) -> list[x509.Certificate]:
        seen: dict[bytes, x509.Certificate] = {}
        for cas in self.cacerts.values():
            for ca in cas:
                seen.setdefault(_spki(ca), ca)
        return list(seen.values())


def _resolve(base: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else base / p


def load_credentials(policy: Policy) -> Credentials:
    """Read every certificate, key and CRL the policy names. Raises PkiError
    naming the connection and file when something is missing or wrong."""
    base = Path(policy.path).parent if policy.path else Path.cwd()
    secrets_base = Path(policy.secrets.path).parent if policy.secrets.path else base
    creds = Credentials()
    keys = None
    for conn in policy.connections:
        if conn.local.auth in ("pubkey", "eap-tls"):  # EAP-TLS: our client certificate
            if not conn.local.certs:
                raise PkiError(f"connection '{conn.name}': local.auth = \"{conn.local.auth}\" needs local.certs")
            chain: list[x509.Certificate] = []
            for name in conn.local.certs:
                chain += load_certificate_file(_resolve(base, name))
            try:
                public_key_of(chain[0])  # compared with the keys below; we sign with it
            except PkiError as exc:
                raise PkiError(f"connection '{conn.name}': local.certs {conn.local.certs[0]}: {exc}") from None
            if keys is None:
                keys = [(entry, load_private_key_secret(entry, secrets_base)) for entry in policy.secrets.private]
            want = _spki(chain[0])
            match = [k for _, k in keys if _spki(k) == want]
            if not match:
                raise PkiError(f"connection '{conn.name}': no [private.*] key in the secrets file matches "
                               f"the certificate {conn.local.certs[0]}")
            creds.local[conn.name] = LocalCredentials(chain, match[0])
        if conn.remote.auth in ("pubkey", "eap-tls") or (conn.remote.auth == "eap" and conn.remote.cacerts):
            if not conn.remote.cacerts:
                raise PkiError(f"connection '{conn.name}': remote.auth = \"{conn.remote.auth}\" needs "
                               "remote.cacerts")
            cas: list[x509.Certificate] = []
            for name in conn.remote.cacerts:
                loaded = load_certificate_file(_resolve(base, name))
                for ca in loaded:
                    # its key is hashed for every CERTREQ we send and checks every path: one cryptography
                    # cannot read (a post-quantum CA today) raised UnsupportedAlgorithm at each IKE_SA_INIT
                    try:
                        public_key_of(ca)
                    except PkiError as exc:
                        raise PkiError(f"connection '{conn.name}': remote.cacerts {name}: {exc}") from None
                cas += loaded
            creds.cacerts[conn.name] = cas
    if policy.engine.crls:
        creds.crls = load_crl_files([_resolve(base, c) for c in policy.engine.crls])
    return creds
