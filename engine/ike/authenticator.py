"""Who the peer is and how we prove who we are (RFC 7296 §2.15): PSK and
certificate AUTH payloads, ID payloads, CERT/CERTREQ, and the choice of the
connection that matches an authenticated peer. Keys and certificates come
from the policy's secrets and the credentials the runtime loaded; nothing
here reads a file."""

from __future__ import annotations

from engine.ike import certauth
from engine.ike.auth import find_psk, psk_auth, psk_verify
from engine.ike.errors import LocalError
from engine.ike.identity import identity_to_wire, matches
from engine.ike.text import short
from engine.policy.identity import identity_for_address
from engine.policy.model import ConnectionConfig, Identity, Policy
from engine.wire.constants import AuthMethod
from engine.wire.payloads import AuthPayload, IdPayload

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_PSK = AuthMethod.PSK


class Authenticator:
    def __init__(self, policy: Policy, credentials=None, wall_offset: float = 0.0) -> None:
        self.policy = policy
        self.credentials = credentials
        """engine.pki.credentials.Credentials (None when no connection uses certificates)."""
        self.wall_offset = wall_offset
        """Unix time minus ``now``: certificates are valid between wall-clock dates."""

    def wall_time(self, now: float) -> float:
        return now + self.wall_offset

    # ------------------------------------------------------------ ours
    def id_payload(self, conn: ConnectionConfig, initiator: bool, ike_addr: str) -> IdPayload:
        """IDi/IDr: the configured ID, our certificate's subject, or our IKE address."""
        p = certauth.local_id_payload(self, conn, initiator, ike_addr)
        if p is None:
            id_type, data = identity_to_wire(conn.local.id, ike_addr)
            p = IdPayload(initiator, id_type, data)
        return p

    def auth_payload(self, sa, conn: ConnectionConfig, signed: bytes) -> AuthPayload:
        """Raises LocalError when we hold no key for it (a configuration problem)."""
        if conn.local.auth == "psk":
            local = sa.local_id or conn.local.id or identity_for_address(sa.local[0])
            psk = find_psk(self.policy.secrets, local, sa.remote_id or expected_peer(conn, sa.remote[0]))
            if psk is None:
                raise LocalError(f"no pre-shared key for connection '{conn.name}' in the secrets file")
            return AuthPayload(_PSK, psk_auth(sa.chosen.prf, psk, signed))
        return certauth.sign_auth(self, sa, conn, signed)

    def cert_payloads(self, conn: ConnectionConfig) -> list:
        return certauth.cert_payloads(self, conn)

    def certreq_payloads(self, connections) -> list:
        return certauth.certreq_payloads(self, connections)

    def check(self, conn: ConnectionConfig) -> str | None:
        """Why we could not authenticate as ``conn`` (None: we can); for planning a policy change."""
        if conn.local.auth == "pubkey":
            local = (self.credentials.local if self.credentials is not None else {}).get(conn.name)
            if local is None:
                return f"connection '{conn.name}': no certificate and key loaded for local.auth = \"pubkey\""
        return None

    # ------------------------------------------------------------ the peer's
    def verify(self, sa, conn: ConnectionConfig, auth: AuthPayload, signed: bytes, payloads,
               peer: Identity, *, may_defer: bool = False) -> tuple[bool, str]:
        if conn.remote.auth == "psk":
            if auth.method != _PSK:
                return False, (f"the peer authenticated with method {auth.method} but connection "
                               f"'{conn.name}' expects a pre-shared key (remote.auth = \"psk\")")
            psk = find_psk(self.policy.secrets, sa.local_id or conn.local.id, peer)
            if psk is None:
                return False, f"no pre-shared key for peer '{short(peer.value)}' in the secrets file"
            if not psk_verify(sa.chosen.prf, psk, signed, auth.data):
                return False, (f"the pre-shared key of peer '{short(peer.value)}' does not match ours: "
                               "check the secret on both sides")
            return True, ""
        return certauth.verify_auth(self, sa, conn, auth, signed, payloads, peer, may_defer=may_defer)

    def select(self, candidates, peer: Identity, wanted: Identity | None) -> tuple[ConnectionConfig | None, str]:
        """Responder: the connection for this peer identity among those IKE_SA_INIT allowed."""
        for conn in candidates:
            if not matches(conn.remote.id, peer):
                continue
            if wanted is not None and conn.local.id is not None and conn.local.id.kind != "any" \
                    and not matches(conn.local.id, wanted):
                continue
            return conn, ""
        names = ", ".join(f"{c.name} (remote.id = {c.remote.id or '%any'})" for c in candidates)
        asking = f" asking for {short(wanted.value)}" if wanted else ""
        return None, (f"no connection accepts the peer identity '{short(peer.value)}'{asking}; "
                      f"candidates: {names or 'none'}")


def expected_peer(conn: ConnectionConfig, peer_addr: str) -> Identity | None:
    """The identity we expect the peer to prove before it has sent one (our PSK
    lookup as initiator): remote.id when it names one peer, else the peer's
    address, as charon does when no id is configured (cloud gateways, routers)."""
    remote = conn.remote.id
    if remote is None or remote.kind == "any":
        try:
            return identity_for_address(peer_addr)
        except ValueError:
            return remote
    return remote
