"""EAP-TLS (RFC 5216 framing, TLS 1.2; RFC 9190 for TLS 1.3), both roles.

After the EAP type octet (13)::

    Flags (1: L 0x80 length included, M 0x40 more fragments, S 0x20 start)
    [TLS Message Length (4), when L]  TLS data

The server opens with a Start request (S, no data). A TLS flight longer than
the fragment size goes out in fragments (the first with L and the total
length, all but the last with M); each is acknowledged by an empty packet of
the other side. Reassembly is bounded (MAX_MESSAGE) and so is the number of
packets (MAX_PACKETS): the other side is not authenticated yet.

Ends:
- TLS 1.2: server CCS+Finished -> client's empty response -> EAP-Success.
- TLS 1.3 (RFC 9190 §2.5): after the client's Finished the server sends the
  protected success indication (one application-data octet 0x00); the client
  acknowledges with an empty response -> EAP-Success.

Each side validates the other's chain (engine.pki.validate, at the ``now``
given) as soon as it arrives and before it sends anything further, and
checks that the certificate names the expected identity. With a ``CrlSource``
(the IKE glue: the runtime's CRL fetcher) the CRLs are its current ones, the
distribution points no current CRL covered are asked for (as IKE_AUTH with
certificates does), and the server waits (``Outcome.WAIT``) while one it
needs is being fetched, once the client proved its key (the TLS handshake is
done): the IKE request is held, and the same response given again decides.

Keys: Key_Material = TLS-PRF-128(master, "client EAP encryption", randoms)
(RFC 5216 §2.3; the RFC 5705 exporter without context is that PRF), or
TLS-Exporter("EXPORTER_EAP_TLS_Key_Material", 0x0D, 128) (RFC 9190 §2.3);
MSK = Key_Material[0:64], EMSK = Key_Material[64:128].
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from engine.crypto.tls import TlsCredentials, TlsFailure, TlsSession
from engine.eap.method import MethodStep, Outcome, PeerMethod, Random, ServerMethod, fail, more
from engine.eap.packet import EapPacket, EapType
from engine.pki.certs import cert_matches_identity, describe, identity_from_cert
from engine.pki.validate import validate_chain
from engine.policy.model import Identity
from engine.secret import Secret
from engine.wire.constants import EapCode

FLAG_L, FLAG_M, FLAG_S = 0x80, 0x40, 0x20
MAX_MESSAGE = 4 * (16384 + 2048)
"""Largest reassembled TLS message accepted (strongSwan's TLS_MAX_MESSAGE_LEN)."""
MAX_PACKETS = 64
"""EAP-TLS packets accepted in one conversation before giving up."""
LABEL_TLS12 = b"client EAP encryption"
LABEL_TLS13 = b"EXPORTER_EAP_TLS_Key_Material"
TYPE_CODE = bytes((EapType.TLS,))
_U32 = struct.Struct("!I")
MAX_WAITS = 64
"""Times the server gives the same response again while a CRL is fetched (the fetch is bounded
in time; this bounds it all the same)."""


class CrlSource(Protocol):
    """Revocation data from outside the method (the runtime's CRL fetcher, through the IKE glue)."""

    def crls(self) -> Sequence:
        """The CRLs to check with now (loaded and fetched)."""

    def want(self, uris: Sequence[str]) -> None:
        """Ask for these distribution points' CRLs (no current one covered the chain)."""

    def pending(self, uris: Sequence[str]) -> list[str]:
        """Those of ``uris`` being fetched now: worth waiting for."""

    def status(self, uris: Sequence[str]) -> str:
        """What the fetcher says of them, for a refusal's reason ("" when nothing fetches)."""


def key_material(session: TlsSession) -> bytes:
    """The 128 octets of Key_Material: MSK then EMSK."""
    if session.version == "1.3":
        return session.export(LABEL_TLS13, 128, TYPE_CODE)
    return session.export(LABEL_TLS12, 128, None)


class _Framing:
    """Fragmentation and reassembly of one side's TLS flights."""

    def __init__(self, fragment_size: int) -> None:
        if fragment_size < 64:
            raise ValueError("an EAP-TLS fragment size below 64 bytes cannot carry a TLS record header")
        self.fragment_size = fragment_size
        self.pending = b""
        self.total = 0
        self.first = True
        self.inbound = bytearray()
        self.expected: int | None = None
        self.packets = 0

    def queue(self, data: bytes) -> None:
        self.pending, self.total, self.first = data, len(data), True

    def next_fragment(self) -> bytes:
        """Flags and data of the next packet from the queued flight."""
        room = self.fragment_size - 1
        data = self.pending
        if self.first and len(data) > room:
            room -= 4
            chunk, self.pending = data[:room], data[room:]
            self.first = False
            return bytes((FLAG_L | FLAG_M,)) + _U32.pack(self.total) + chunk
        chunk, self.pending = data[:room], data[room:]
        flags = FLAG_M if self.pending else 0
        self.first = not self.pending
        return bytes((flags,)) + chunk

    def take(self, type_data: bytes) -> tuple[str, bytes]:
        """Classify a received packet: ("ack", b""), ("more", b""), ("message", data), ("start", b"");
        raises ValueError naming what is wrong."""
        self.packets += 1
        if self.packets > MAX_PACKETS:
            raise ValueError(f"more than {MAX_PACKETS} EAP-TLS packets in one conversation")
        if not type_data:
            raise ValueError("EAP-TLS packet without its flags octet")
        flags, pos = type_data[0], 1
        if flags & FLAG_L:
            if len(type_data) < 5:
                raise ValueError("EAP-TLS L flag without the 4-byte TLS message length")
            length = _U32.unpack_from(type_data, 1)[0]
            if length > MAX_MESSAGE:
                raise ValueError(f"EAP-TLS message of {length} bytes announced (at most {MAX_MESSAGE} accepted)")
            if self.expected is None and not self.inbound:
                self.expected = length
            pos = 5
        data = type_data[pos:]
        if flags & FLAG_S:
            return "start", b""
        if not data and not flags & FLAG_M:
            if self.inbound:
                raise ValueError("empty EAP-TLS packet in the middle of a fragmented message")
            return "ack", b""
        self.inbound += data
        limit = self.expected if self.expected is not None else MAX_MESSAGE
        if len(self.inbound) > limit:
            raise ValueError(f"EAP-TLS fragments exceed the announced length ({limit} bytes)")
        if flags & FLAG_M:
            return "more", b""
        message, self.inbound, self.expected = bytes(self.inbound), bytearray(), None
        return "message", message


def _chain_problem(session: TlsSession, creds: TlsCredentials, now: datetime, expected: Identity | None,
                   who: str, source: CrlSource | None = None, *, may_wait: bool = False) -> str | None:
    """Why the other side's chain is not acceptable, or None; a ``Waiting`` reason when a CRL it
    needs is being fetched (only with ``may_wait``)."""
    chain = session.peer_chain()
    if not chain:
        return f"the {who} sent no certificate"
    crls = source.crls() if source is not None else creds.crls
    result = validate_chain(chain[0], chain[1:], creds.cas, crls, now,
                            revocation=creds.revocation)  # type: ignore[arg-type]
    pending: list[str] = []
    if source is not None and result.crl_uris:
        source.want(result.crl_uris)
        if may_wait and (result.ok or result.needs_crl):
            pending = source.pending(result.crl_uris)
    if not result and not pending:
        fetching = source.status(result.crl_uris) if source is not None and result.crl_uris else ""
        note = f" (CRL {fetching})" if fetching else ""
        return f"the {who}'s certificate is not acceptable: {result.reason}{note}"
    # the client's identity is its IKE ID, a claim; the server's is our configured remote.id, a pattern
    if expected is not None and expected.kind != "any" \
            and not cert_matches_identity(chain[0], expected, wildcards=who != "client"):
        return f"the {who}'s certificate {describe(chain[0])} does not name '{expected}'"
    if pending:
        return Waiting(f"waiting for the CRL from {', '.join(pending)} to check {describe(chain[0])}")
    return None


class Waiting(str):
    """_chain_problem's reason when the answer waits for a CRL being fetched."""


class EapTlsServer(ServerMethod):
    type = EapType.TLS
    name = "EAP-TLS"

    def __init__(self, creds: TlsCredentials, now: datetime, *, peer_identity: Identity | None = None,
                 random: Random = os.urandom, crl_source: CrlSource | None = None) -> None:
        super().__init__(random)
        self.creds, self.now, self.peer_identity = creds, now, peer_identity
        self.crl_source = crl_source
        self.framing = _Framing(creds.fragment_size)
        self.tls = TlsSession(True, creds)
        self.checked = False
        self.waiting: tuple[int, bytes] | None = None
        """The response taken while we wait for a CRL (identifier, type data): given again, it is
        not fed to TLS twice."""
        self.waits = 0
        self.finished = False
        self.subject = ""
        """The client certificate's subject DN, once validated (for the Clients view)."""

    def start(self, identifier: int) -> EapPacket:
        return EapPacket(EapCode.REQUEST, identifier, self.type, bytes((FLAG_S,)))

    def _request(self, identifier: int, body: bytes) -> MethodStep:
        return more(EapPacket(EapCode.REQUEST, identifier, self.type, body))

    def process(self, response: EapPacket, identifier: int) -> MethodStep:
        if self.waiting is not None:
            if (response.identifier, response.type_data) != self.waiting:
                return fail("the client sent another EAP-TLS response while its certificate was being checked")
            self.waiting = None
            return self._after_tls(response, identifier)
        try:
            kind, data = self.framing.take(response.type_data)
        except ValueError as exc:
            return fail(str(exc))
        if kind == "more":
            return self._request(identifier, b"\0")
        if kind == "ack":
            if self.framing.pending:
                return self._request(identifier, self.framing.next_fragment())
            if self.finished:
                self.msk = Secret(key_material(self.tls)[:64])
                return MethodStep(Outcome.SUCCESS)
            return fail("the client acknowledged a TLS flight we never sent")
        if kind == "start":
            return fail("EAP-TLS Start from the client")
        try:
            self.tls.receive(data)
        except TlsFailure as exc:
            return fail(str(exc))
        return self._after_tls(response, identifier)

    def _after_tls(self, response: EapPacket, identifier: int) -> MethodStep:
        if not self.checked and self.tls.peer_chain():
            # Waiting only once the client proved its key (CertificateVerify, in the flight that
            # completed the handshake): one that copied a certificate makes us wait for nothing.
            may_wait = self.tls.handshake_done and self.waits < MAX_WAITS
            problem = _chain_problem(self.tls, self.creds, self.now, self.peer_identity, "client",
                                     self.crl_source, may_wait=may_wait)
            if isinstance(problem, Waiting):
                self.waits += 1
                self.waiting = (response.identifier, response.type_data)
                return MethodStep(Outcome.WAIT, reason=problem)
            if problem:
                return fail(problem)
            self.checked = True
            self.subject = identity_from_cert(self.tls.peer_chain()[0]).value
            self.identity = self.subject.encode()
        if self.tls.handshake_done:
            if not self.checked:
                return fail("the client finished TLS without a certificate")
            if self.tls.version == "1.3":
                self.tls.send_application_data(b"\0")  # RFC 9190 §2.5: protected success indication
            self.finished = True
        out = self.tls.outgoing()
        if not out:
            return fail("TLS has nothing to answer the client's message with")
        self.framing.queue(out)
        return self._request(identifier, self.framing.next_fragment())


class EapTlsPeer(PeerMethod):
    type = EapType.TLS
    name = "EAP-TLS"

    def __init__(self, identity: bytes, creds: TlsCredentials, now: datetime, *,
                 server_identity: Identity | None = None, random: Random = os.urandom,
                 crl_source: CrlSource | None = None) -> None:
        super().__init__(random)
        self.identity = identity
        self.creds, self.now, self.server_identity = creds, now, server_identity
        self.crl_source = crl_source
        self.framing = _Framing(creds.fragment_size)
        self.tls = TlsSession(False, creds)
        self.checked = False
        self.indicated = False
        self.started = False

    @property
    def may_succeed(self) -> bool:
        if not (self.tls.handshake_done and self.checked and not self.framing.pending):
            return False
        return self.indicated or self.tls.version == "1.2"

    def _response(self, request: EapPacket, body: bytes) -> MethodStep:
        return more(EapPacket(EapCode.RESPONSE, request.identifier, self.type, body))

    def process(self, request: EapPacket) -> MethodStep:
        try:
            kind, data = self.framing.take(request.type_data)
        except ValueError as exc:
            return fail(str(exc))
        if kind == "start":
            if self.started:
                return fail("a second EAP-TLS Start")
            self.started = True
            try:
                self.tls.start()
            except TlsFailure as exc:
                return fail(str(exc))
            self.framing.queue(self.tls.outgoing())
            return self._response(request, self.framing.next_fragment())
        if not self.started:
            return fail("EAP-TLS data before the server's Start")
        if kind == "more":
            return self._response(request, b"\0")
        if kind == "ack":
            if self.framing.pending:
                return self._response(request, self.framing.next_fragment())
            return fail("the server acknowledged a TLS flight we never sent")
        try:
            self.tls.receive(data)
        except TlsFailure as exc:
            return fail(str(exc))
        if not self.checked and self.tls.peer_chain():
            # The client does not wait (as IKE_AUTH's initiator): missing CRLs are asked for, for the next try.
            problem = _chain_problem(self.tls, self.creds, self.now, self.server_identity, "server", self.crl_source)
            if problem:
                return fail(problem)
            self.checked = True
        if self.tls.handshake_done:
            if not self.checked:
                return fail("the server finished TLS without a certificate")
            app = self.tls.application_data()
            if app:
                if app != b"\0":
                    return fail("unexpected TLS application data from the server (RFC 9190 allows one 0x00)")
                self.indicated = True
            if self.msk is None:
                self.msk = Secret(key_material(self.tls)[:64])
        out = self.tls.outgoing()
        if out:
            self.framing.queue(out)
            return self._response(request, self.framing.next_fragment())
        return self._response(request, b"\0")
