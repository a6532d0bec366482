"""A TLS 1.2/1.3 endpoint on memory buffers (pyOpenSSL), for EAP-TLS.

Python's ``ssl`` drives a handshake over a MemoryBIO too, but has no TLS
exporter, and the EAP-TLS keys are exporter outputs (RFC 5216 §2.3, RFC 9190
§2.3). pyOpenSSL (PyCA) has both. Sans-IO: bytes in with ``receive``, bytes
out with ``outgoing``; no socket, no clock.

OpenSSL does not judge the peer's certificate here (it would read the
system clock and its own trust store): the handshake accepts any chain and
``peer_chain`` hands it to the caller, which validates it with
engine.pki.validate at the engine's ``now`` before it sends anything more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto

_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_READ = 65536


class TlsFailure(Exception):
    """The handshake failed; the message says why in words an admin can act on."""


@dataclass(frozen=True)
class TlsCredentials:
    """What one side of EAP-TLS holds (cryptography objects from engine.pki)."""

    certs: tuple[Any, ...]
    """Our certificate chain (x509.Certificate), end certificate first."""
    key: Any
    """Our private key (a cryptography private key)."""
    cas: tuple[Any, ...] = ()
    """CA certificates trusted to authenticate the other side."""
    crls: tuple[Any, ...] = ()
    """CRLs to check the other side's chain with."""
    revocation: str = "relaxed"
    """How strictly (engine.pki.validate's revocation: relaxed, ifuri, strict)."""
    min_version: str = "1.2"
    max_version: str = "1.3"
    """TLS versions accepted: "1.2" or "1.3" (RFC 5216 and RFC 9190)."""
    fragment_size: int = 1024
    """Largest EAP-TLS fragment we send (strongSwan's eap-tls default)."""


def _explain(exc: Exception) -> str:
    parts = []
    for item in getattr(exc, "args", ()) or ():
        if isinstance(item, list):
            parts += [str(e[2]) for e in item if isinstance(e, tuple) and len(e) == 3]
    return ", ".join(p for p in parts if p) or str(exc) or type(exc).__name__


def _call(method, obj, convert) -> None:
    """pyOpenSSL >= 24.3 takes cryptography objects (and deprecates its own); older ones need them converted."""
    try:
        method(obj)
    except TypeError:
        method(convert(obj))


class TlsSession:
    """One TLS connection, server (our gateway) or client (our initiator)."""

    def __init__(self, server: bool, creds: TlsCredentials) -> None:
        if creds.min_version not in _VERSIONS or creds.max_version not in _VERSIONS:
            raise ValueError("TLS versions are '1.2' or '1.3'")
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(_VERSIONS[creds.min_version])
        ctx.set_max_proto_version(_VERSIONS[creds.max_version])
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
        if not server:
            # strongSwan's own TLS stack (charon's eap-tls) sends no RFC 5746 renegotiation_info;
            # OpenSSL 3 refuses such servers unless told otherwise. Safe here: renegotiation, the
            # only thing RFC 5746 protects, is disabled on our side (OP_NO_RENEGOTIATION).
            ctx.set_options(SSL.OP_LEGACY_SERVER_CONNECT)
        if not creds.certs:
            raise ValueError("EAP-TLS needs a certificate on both sides")
        _call(ctx.use_certificate, creds.certs[0], crypto.X509.from_cryptography)
        for extra in creds.certs[1:]:
            _call(ctx.add_extra_chain_cert, extra, crypto.X509.from_cryptography)
        _call(ctx.use_privatekey, creds.key, crypto.PKey.from_cryptography_key)
        ctx.check_privatekey()
        # Ask for (server) or accept (client) a certificate; the caller judges it (module doc).
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        if server:
            for ca in creds.cas:
                _call(ctx.add_client_ca, ca, crypto.X509.from_cryptography)
        self.server = server
        self.conn = SSL.Connection(ctx, None)
        if server:
            self.conn.set_accept_state()
        else:
            self.conn.set_connect_state()
        self.handshake_done = False
        self._app = bytearray()

    def start(self) -> None:
        """The client's first flight (ClientHello)."""
        self._step()

    def receive(self, data: bytes) -> None:
        """Feed TLS records from the peer; raises TlsFailure."""
        if data:
            self.conn.bio_write(bytes(data))
        self._step()
        try:  # OpenSSL reads certificates cryptography refuses (a version beyond v3: InvalidVersion)
            self.peer_chain()
        except (ValueError, x509.InvalidVersion) as exc:
            raise TlsFailure(f"the peer's certificate cannot be read ({exc})") from None

    def _step(self) -> None:
        try:
            if not self.handshake_done:
                self.conn.do_handshake()
                self.handshake_done = True
            while True:
                chunk = self.conn.recv(_READ)
                if not chunk:
                    break
                self._app += chunk
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            raise TlsFailure("the peer closed the TLS connection") from None
        except SSL.Error as exc:
            raise TlsFailure(f"TLS handshake failed: {_explain(exc)}") from None

    def outgoing(self) -> bytes:
        """TLS records waiting to go to the peer."""
        out = bytearray()
        while True:
            try:
                chunk = self.conn.bio_read(_READ)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def send_application_data(self, data: bytes) -> None:
        self.conn.send(data)

    def application_data(self) -> bytes:
        """Application data received so far (taken)."""
        data, self._app = bytes(self._app), bytearray()
        return data

    @property
    def version(self) -> str:
        """``1.2`` or ``1.3`` once negotiated, else empty."""
        name = self.conn.get_protocol_version_name()
        return {"TLSv1.2": "1.2", "TLSv1.3": "1.3"}.get(name, "")

    def peer_chain(self) -> list:
        """The peer's certificates as cryptography objects, end certificate first (empty before they came)."""
        chain = self.conn.get_peer_cert_chain() or []
        certs = [c.to_cryptography() for c in chain]
        if self.server:
            # OpenSSL leaves the client's end certificate out of a server's chain list.
            end = self.conn.get_peer_certificate()
            if end is not None and (not certs or certs[0] != end.to_cryptography()):
                certs.insert(0, end.to_cryptography())
        return certs

    def export(self, label: bytes, length: int, context: bytes | None = None) -> bytes:
        """The TLS exporter (RFC 5705, RFC 8446 §7.5); after the handshake only."""
        if not self.handshake_done:
            raise ValueError("the TLS exporter needs a finished handshake")
        return self.conn.export_keying_material(label, length, context)
