"""The IKE endpoint: every IKE SA of one host, sans-IO (model: aioquic's
QuicConnection, but for many SAs).

Inputs: ``receive_datagram(data, local, remote, now)`` (an IKE message,
non-ESP marker already removed), ``handle_timer(now)`` and commands
(``initiate``, ``terminate``, ``rekey``, ``apply_policy``). Outputs, drained
by the caller: ``datagrams_to_send()``, ``get_timer()``, ``next_event()``.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import itertools
import logging
import os
import random
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from engine.crypto.auth import cookie_value
from engine.crypto.errors import InvalidKeyExchange
from engine.crypto.ke import KeyExchange
from engine.events import (
    ChildState,
    Event,
    ExchangeReceived,
    ExchangeSent,
    IkeState,
    NegotiationFailed,
    PolicyApplied,
)
from engine.ike import proposals as props
from engine.ike.auth import find_psk, psk_auth, psk_verify
from engine.ike.child import ChildSa
from engine.ike.errors import LocalError
from engine.ike.identity import matches
from engine.ike.init import NONCE_SIZE, capability_notifies, check_nat, install_ike_keys, nat_notifies, read_capabilities
from engine.ike.sa import IkeSa
from engine.ike.status import ike_sa_info
from engine.ike.tasks import CreateChild, IkeInit, RekeyChild, RekeyIke
from engine.policy.model import ChildConfig, ConnectionConfig, Identity, Policy
from engine.wire.constants import AuthMethod, ExchangeType, NotifyType
from engine.wire.errors import WireError
from engine.wire.constants import FLAG_RESPONSE
from engine.wire.message import decode_header, decode_message, encode_message
from engine.wire.summary import summarize_lazy
from engine.wire.payloads import AuthPayload, KePayload, NoncePayload, NotifyPayload, SaPayload

log = logging.getLogger("engine.ike")

Addr = tuple[str, int]
HALF_OPEN_TIMEOUT = 30.0  # charon's half_open_timeout
COOKIE_SECRET_LIFETIME = 120.0


class Datagram(NamedTuple):
    """A datagram to send (a tuple: built for every message on the hot path)."""

    data: bytes
    local: Addr
    remote: Addr


class IkeEndpoint:
    """All IKE SAs of one host."""

    def __init__(self, policy: Policy, *, rng: Callable[[int], bytes] = os.urandom,
                 seed: int | None = None, fragment_size: int | None = None, credentials=None,
                 wall_offset: float = 0.0) -> None:
        self.policy = policy
        self.credentials = credentials
        """engine.pki.credentials.Credentials for certificate authentication (loaded by the runtime)."""
        self.wall_offset = wall_offset
        """Unix time minus ``now``: certificates are valid between wall-clock dates."""
        self.rng = rng
        self.random = random.Random(seed)
        self.fragment_size = fragment_size
        self._sas: dict[bytes, IkeSa] = {}
        """By our SPI."""
        self._half_open: dict[tuple[bytes, str, int], IkeSa] = {}
        """Responder SAs by (SPIi, peer address, port), to spot retransmitted IKE_SA_INIT."""
        self._spis: set[bytes] = set()
        self._reqids: dict[tuple[str, str], int] = {}
        self._next_reqid = 1
        self._next_ike = 1
        self._next_child = 1
        self._out: list[Datagram] = []
        self._events: deque[Event] = deque()
        self._timers: list[tuple[float, Callable[[float], None]]] = []
        self._attempts: dict[str, int] = {}
        self._cookie_secret = (self.rng(32), -1e18)
        self._old_cookie_secret: bytes | None = None
        self.stats: dict[str, int] = {}
        self._heap: list[tuple[float, int, IkeSa]] = []
        self._heap_seq = itertools.count()
        self._dirty: set[IkeSa] = set()
        self._half_open_sas: set[IkeSa] = set()
        self._init_ids: dict[tuple[bytes, str, int], int] = {}
        """Recent IKE_SA_INIT requests by (SPIi, peer address, port): their IKE SA number."""
        self._by_addr: dict[tuple[str, str], set[IkeSa]] = {}
        """IKE SAs by (connection, peer address): the INITIAL_CONTACT decision."""
        self._by_identity: dict[tuple[str, str], set[IkeSa]] = {}
        """Established IKE SAs by (connection, peer identity): what an INITIAL_CONTACT replaces."""

    # ------------------------------------------------------------ config
    @property
    def natt_port(self) -> int:
        return self.policy.engine.natt_port

    @property
    def ike_port(self) -> int:
        return self.policy.engine.ike_port

    @property
    def retransmit_tries(self) -> int:
        return self.policy.engine.retransmit_tries

    @property
    def keepalive_interval(self) -> float:
        return self.policy.engine.keepalive

    def retransmit_timeout(self, n: int) -> float:
        e = self.policy.engine
        return e.retransmit_timeout * (e.retransmit_base ** n)

    # ------------------------------------------------------------ outputs
    def transmit(self, data: bytes, local: Addr, remote: Addr) -> None:
        self._out.append(Datagram(data, local, remote))

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    # Timers: one heap entry per SA, refreshed only for SAs touched since the last
    # look ("dirty"), so an event costs the same with 10 SAs as with 10,000. An
    # entry is stale when the SA's recorded heap time moved on; stale entries are
    # dropped when they reach the top.
    def touch(self, sa: IkeSa) -> None:
        """``sa`` handled something: its timers may have moved."""
        self._dirty.add(sa)

    def _refresh_timers(self) -> None:
        heap = self._heap
        for sa in self._dirty:
            t = None if sa.state == IkeState.DESTROYED else sa.next_timer()
            if t is not None and t != sa.heap_time:
                heapq.heappush(heap, (t, next(self._heap_seq), sa))
            sa.heap_time = t
        self._dirty.clear()
        while heap and heap[0][2].heap_time != heap[0][0]:
            heapq.heappop(heap)

    def get_timer(self) -> float | None:
        self._refresh_timers()
        times = [t for t, _ in self._timers]
        if self._heap:
            times.append(self._heap[0][0])
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        due = [t for t in self._timers if t[0] <= now]
        self._timers = [t for t in self._timers if t[0] > now]
        for _, fn in due:
            fn(now)
        self._refresh_timers()
        heap = self._heap
        ready: list[IkeSa] = []
        while heap and heap[0][0] <= now:
            t, _, sa = heapq.heappop(heap)
            if sa.heap_time == t:
                sa.heap_time = None
                ready.append(sa)
        for sa in ready:
            if sa.state != IkeState.DESTROYED:
                sa.handle_timer(now)
                self.touch(sa)

    def call_at(self, when: float, fn: Callable[[float], None]) -> None:
        self._timers.append((when, fn))

    # ------------------------------------------------------------ SA registry
    @property
    def sas(self) -> list[IkeSa]:
        return list(self._sas.values())

    def register(self, sa: IkeSa) -> None:
        self._sas[sa.our_spi] = sa
        sa.addr_key = (sa.name, sa.remote[0])  # kept: the name and address may change later
        self._by_addr.setdefault(sa.addr_key, set()).add(sa)
        self.touch(sa)

    def forget(self, sa: IkeSa) -> None:
        if self._sas.get(sa.our_spi) is sa:
            del self._sas[sa.our_spi]
        key = getattr(sa, "half_open_key", None)
        if key is not None and self._half_open.get(key) is sa:
            del self._half_open[key]
        self._half_open_sas.discard(sa)
        for index, key in ((self._by_addr, sa.addr_key), (self._by_identity, sa.identity_key)):
            group = index.get(key)
            if group is not None:
                group.discard(sa)
                if not group:
                    del index[key]
        self._dirty.discard(sa)
        sa.heap_time = None

    def state_changed(self, sa: IkeSa, old: IkeState, new: IkeState) -> None:
        if old == IkeState.CONNECTING:
            self._half_open_sas.discard(sa)

    def next_ike_id(self) -> int:
        n = self._next_ike
        self._next_ike += 1
        return n

    def next_child_id(self) -> int:
        n = self._next_child
        self._next_child += 1
        return n

    def new_ike_spi(self) -> bytes:
        while True:
            spi = self.rng(8)
            if spi != b"\0" * 8 and spi not in self._sas:
                return spi

    def release_ike_spi(self, spi: bytes) -> None:
        pass  # IKE SPIs are only reserved once an SA registers them

    def allocate_spi(self) -> bytes:
        """A fresh inbound ESP/AH SPI (0-255 are reserved, RFC 4303 §2.1)."""
        while True:
            spi = self.rng(4)
            if int.from_bytes(spi, "big") >= 256 and spi not in self._spis:
                self._spis.add(spi)
                return spi

    def release_spi(self, spi: bytes) -> None:
        self._spis.discard(spi)

    def reqid_for(self, sa: IkeSa, cfg: ChildConfig, rekey: ChildSa | None) -> int:
        if rekey is not None:
            return rekey.reqid
        return self.reqid_for_config(sa.name, cfg.name)

    def reqid_for_config(self, connection: str, child: str) -> int:
        """The reqid of a CHILD config, stable for the engine's life: the kernel's
        policies (and trap policies, before any IKE SA exists) are tied to it."""
        key = (connection, child)
        if key not in self._reqids:
            self._reqids[key] = self._next_reqid
            self._next_reqid += 1
        return self._reqids[key]

    # ------------------------------------------------------------ commands
    def _local_addr(self, conn: ConnectionConfig, remote: str) -> str:
        if conn.local_addrs and conn.local_addrs[0] not in ("%any", "0.0.0.0", "::"):
            return conn.local_addrs[0]
        version = ipaddress.ip_address(remote).version
        for a in self.policy.engine.listen:
            if ipaddress.ip_address(a).version == version:
                return a
        return "0.0.0.0" if version == 4 else "::"

    def initiate(self, name: str, now: float, child: str | None = None) -> IkeSa:
        """Bring up connection ``name`` (all its children, or one)."""
        conn = self._conn(name)
        if not conn.remote_addrs or conn.remote_addrs[0] in ("%any", "%any6"):
            raise LocalError(f"connection '{name}' has no remote address to initiate to")
        children = [conn.child(child)] if child else list(conn.children)
        existing = self._established(conn.name)
        if existing is not None:
            # Bring up missing children on the SA we already have.
            have = {c.config.name for c in existing.children.values()}
            for cfg in children:
                if cfg.name not in have:
                    existing.queue(CreateChild(cfg), now)
            self.touch(existing)
            return existing
        remote = (conn.remote_addrs[0], conn.remote_port)
        local = (self._local_addr(conn, remote[0]), conn.local_port or self.ike_port)
        sa = IkeSa(self, conn, initiator=True, unique_id=self.next_ike_id(), local=local, remote=remote,
                   spi_i=self.new_ike_spi(), now=now)
        self.register(sa)
        sa.queue(IkeInit(children), now)
        return sa

    def terminate(self, name: str, now: float, *, unique_id: int | None = None) -> int:
        """Delete the IKE SAs of a connection (or only IKE SA ``unique_id``); returns how many."""
        self._conn(name)
        n = 0
        for sa in list(self._sas.values()):
            if unique_id is not None and sa.unique_id != unique_id:
                continue
            if sa.name == name and sa.state != IkeState.DESTROYED:
                sa.delete(now, "terminated by admin")
                self.touch(sa)
                n += 1
        self._attempts.pop(name, None)
        return n

    def rekey(self, name: str, now: float, *, ike: bool = False, unique_id: int | None = None) -> int:
        self._conn(name)
        n = 0
        for sa in list(self._sas.values()):
            if sa.name != name or sa.state != IkeState.ESTABLISHED:
                continue
            if ike:
                if unique_id is None or sa.unique_id == unique_id:
                    sa.queue(RekeyIke(), now)
                    self.touch(sa)
                    n += 1
                continue
            for c in list(sa.children.values()):
                if c.state == ChildState.INSTALLED and (unique_id is None or c.unique_id == unique_id):
                    sa.queue(RekeyChild(c), now)
                    self.touch(sa)
                    n += 1
        return n

    def rekey_child_spi(self, spi_in: int, now: float, *, hard: bool = False) -> None:
        """The datapath hit a soft (rekey) or hard (delete) limit of an SA."""
        from engine.ike.tasks import DeleteChild

        spi = spi_in.to_bytes(4, "big")
        for sa in self._sas.values():
            c = sa.children.get(spi)
            if c is None:
                continue
            if hard:
                sa.queue(DeleteChild(c, "hard lifetime reached"), now)
            elif c.state == ChildState.INSTALLED:
                sa.queue(RekeyChild(c), now)
            self.touch(sa)

    def child_install_failed(self, spi_in: int, now: float, reason: str) -> None:
        """The datapath could not install a CHILD SA: tell the admin and delete it with the peer."""
        from engine.ike.tasks import DeleteChild

        spi = spi_in.to_bytes(4, "big")
        for sa in self._sas.values():
            c = sa.children.get(spi)
            if c is None:
                continue
            sa.fail(ExchangeType.CREATE_CHILD_SA, "DATAPATH", f"CHILD SA '{c.config.name}' could not be "
                    f"installed ({reason}); deleting it so the peer stops sending into it", now,
                    child=c.config.name)
            sa.queue(DeleteChild(c, "datapath refused it"), now)
            self.touch(sa)

    def acquire(self, reqid: int, now: float) -> None:
        """Traffic hit a trap policy: bring up the child with that reqid."""
        for (conn, child), r in self._reqids.items():
            if r == reqid:
                self.initiate(conn, now, child)
                return

    def shutdown(self, now: float) -> None:
        """Delete every SA (INFORMATIONAL); the runtime flushes and stops."""
        for sa in list(self._sas.values()):
            if sa.established:
                sa.delete(now, "shutting down")
                self.touch(sa)
            else:
                sa.destroy(now, "shutting down")

    def wall_time(self, now: float) -> float:
        return now + self.wall_offset

    def apply_policy(self, policy: Policy, now: float, credentials=None) -> PolicyApplied:
        """Switch to ``policy``: SAs of removed or changed connections go, new and
        changed connections with start_action = start come up; others stay."""
        old = {c.name: c for c in self.policy.connections}
        new = {c.name: c for c in policy.connections}
        added = tuple(n for n in new if n not in old)
        removed = tuple(n for n in old if n not in new)
        changed = tuple(n for n in new if n in old and new[n] != old[n])
        for n in removed + changed:
            self.terminate(n, now)
        self.policy = policy
        if credentials is not None:
            self.credentials = credentials
        for n in added + changed:
            conn = new[n]
            if any(c.start_action == "start" for c in conn.children) and conn.remote_addrs:
                self.initiate(n, now)
        event = PolicyApplied(added, removed, changed)
        self.emit(event)
        return event

    def start(self, now: float) -> None:
        """Initiate every connection with a child whose start_action is start."""
        for conn in self.policy.connections:
            kids = [c.name for c in conn.children if c.start_action == "start"]
            if kids and conn.remote_addrs and conn.remote_addrs[0] not in ("%any", "%any6"):
                self.initiate(conn.name, now)

    def _conn(self, name: str) -> ConnectionConfig:
        try:
            return self.policy.connection(name)
        except KeyError:
            raise LocalError(f"no connection named '{name}'") from None

    def _established(self, name: str) -> IkeSa | None:
        for sa in self._sas.values():
            if sa.name == name and sa.state == IkeState.ESTABLISHED:
                return sa
        return None

    # ------------------------------------------------------------ SA callbacks
    def float_ports(self, sa: IkeSa) -> None:
        """Move IKE to the NAT-T ports after IKE_SA_INIT (§2.23)."""
        sa.local = (sa.local[0], self.natt_port)
        sa.remote = (sa.remote[0], sa.conn.remote_natt_port)
        sa.floated = True

    def initial_contact(self, sa: IkeSa) -> bool:
        """No other IKE SA of this connection is up with that peer address."""
        return not any(o is not sa and o.established for o in self._by_addr.get((sa.name, sa.remote[0]), ()))

    def initial_contact_received(self, sa: IkeSa, now: float) -> None:
        """The peer lost its state: drop our older SAs with it (§2.4)."""
        for o in list(self._by_identity.get(sa.identity_key, ())):
            if o is not sa and o.established:
                o.destroy(now, "peer sent INITIAL_CONTACT")

    def ike_established(self, sa: IkeSa, now: float) -> None:
        self._attempts.pop(sa.name, None)
        sa.identity_key = (sa.name, str(sa.remote_id))
        self._by_identity.setdefault(sa.identity_key, set()).add(sa)

    def connection_failed(self, sa: IkeSa, now: float) -> None:
        """keyingtries: try again, with a growing pause, until the budget is spent."""
        conn = sa.conn
        if conn is None or not sa.original_initiator:
            return
        n = self._attempts.get(conn.name, 0) + 1
        self._attempts[conn.name] = n
        if conn.keyingtries != 0 and n >= conn.keyingtries:
            self._attempts.pop(conn.name, None)
            return
        delay = min(60.0, 2.0 * n) + self.random.uniform(0, 1)
        self.call_at(now + delay, lambda t, name=conn.name: self._retry_initiate(name, t))

    def _retry_initiate(self, name: str, now: float) -> None:
        try:
            self.initiate(name, now)
        except LocalError:
            pass

    def peer_gone(self, sa: IkeSa, children: list[ChildConfig], action: str, now: float) -> None:
        if action == "restart" and sa.conn is not None and sa.conn.remote_addrs:
            self.initiate(sa.name, now)

    def retry_later(self, sa: IkeSa, task, now: float) -> None:
        def again(t: float, sa=sa, task=task) -> None:
            if sa.state == IkeState.ESTABLISHED:
                sa.queue(task, t)
                self.touch(sa)

        self.call_at(now + self.random.uniform(1.0, 3.0), again)

    # ------------------------------------------------------------ authentication
    def auth_payload(self, sa: IkeSa, conn: ConnectionConfig, signed: bytes, *, local: bool) -> AuthPayload:
        if conn.local.auth == "psk":
            psk = find_psk(self.policy.secrets, sa.local_id or conn.local.id, sa.remote_id or conn.remote.id)
            if psk is None:
                raise LocalError(f"no pre-shared key for connection '{conn.name}' in the secrets file")
            return AuthPayload(AuthMethod.PSK, psk_auth(sa.chosen.prf, psk, signed))
        from engine.ike.certauth import sign_auth

        return sign_auth(self, sa, conn, signed)

    def verify_auth(self, sa: IkeSa, conn: ConnectionConfig, auth: AuthPayload, signed: bytes,
                    payloads, peer: Identity) -> tuple[bool, str]:
        if conn.remote.auth == "psk":
            if auth.method != AuthMethod.PSK:
                return False, (f"the peer authenticated with method {auth.method} but connection "
                               f"'{conn.name}' expects a pre-shared key (remote.auth = \"psk\")")
            psk = find_psk(self.policy.secrets, sa.local_id or conn.local.id, peer)
            if psk is None:
                return False, f"no pre-shared key for peer '{peer.value}' in the secrets file"
            if not psk_verify(sa.chosen.prf, psk, signed, auth.data):
                return False, (f"the pre-shared key of peer '{peer.value}' does not match ours: "
                               "check the secret on both sides")
            return True, ""
        from engine.ike.certauth import verify_auth

        return verify_auth(self, sa, conn, auth, signed, payloads, peer)

    def select_for_auth(self, sa: IkeSa, peer: Identity, wanted: Identity | None) -> tuple[ConnectionConfig | None, str]:
        """Responder: the connection for this peer identity among those IKE_SA_INIT allowed."""
        for conn in sa.candidates:
            if not matches(conn.remote.id, peer):
                continue
            if wanted is not None and conn.local.id is not None and conn.local.id.kind != "any" \
                    and not matches(conn.local.id, wanted):
                continue
            return conn, ""
        names = ", ".join(f"{c.name} (remote.id = {c.remote.id or '%any'})" for c in sa.candidates)
        return None, (f"no connection accepts the peer identity '{peer.value}'"
                      f"{' asking for ' + wanted.value if wanted else ''}; candidates: {names or 'none'}")

    # ------------------------------------------------------------ input
    def receive_datagram(self, data: bytes, local: Addr, remote: Addr, now: float) -> None:
        try:
            header = decode_header(data)
        except WireError:
            self.count("malformed")
            return
        if header.exchange == ExchangeType.IKE_SA_INIT and not header.response:
            if header.spi_r == b"\0" * 8:
                self._init_request(data, header, local, remote, now)
            return
        # Our SPI: the responder's if the peer is the original initiator.
        ours = header.spi_r if header.initiator else header.spi_i
        sa = self._sas.get(ours)
        if sa is None:
            self.count("unknown_spi")
            return
        if header.exchange != ExchangeType.IKE_SA_INIT and sa.spi_r != header.spi_r and sa.spi_i != header.spi_i:
            self.count("unknown_spi")
            return
        try:
            message = decode_message(data)
        except WireError as exc:
            self.count("malformed")
            log.debug("malformed message from %s:%d: %s", remote[0], remote[1], exc)
            return
        sa.receive(message, local, remote, now)
        self.touch(sa)

    def _candidates(self, local: Addr, remote: Addr) -> list[ConnectionConfig]:
        out = []
        for conn in self.policy.connections:
            if conn.local_addrs and not any(_addr_match(a, local[0]) for a in conn.local_addrs):
                continue
            if conn.remote_addrs and not any(_addr_match(a, remote[0]) for a in conn.remote_addrs):
                continue
            out.append(conn)
        return out

    def _cookie_ok(self, payloads, nonce: bytes, remote: Addr, spi_i: bytes, now: float) -> bool:
        first = payloads[0] if payloads else None
        if not isinstance(first, NotifyPayload) or first.type != NotifyType.COOKIE:
            return False
        secret, _ = self._cookie_secret
        if first.data == cookie_value(secret, nonce, remote[0], spi_i):
            return True
        return self._old_cookie_secret is not None and \
            first.data == cookie_value(self._old_cookie_secret, nonce, remote[0], spi_i)

    def _init_id(self, spi_i: bytes, remote: Addr) -> int:
        """The IKE SA number for an initiator's IKE_SA_INIT: the same across its retries
        (COOKIE, INVALID_KE_PAYLOAD), so a stateless answer and the SA that follows
        appear as one negotiation."""
        key = (spi_i, remote[0], remote[1])
        uid = self._init_ids.get(key)
        if uid is None:
            uid = self._init_ids[key] = self.next_ike_id()
            if len(self._init_ids) > 4096:
                self._init_ids.pop(next(iter(self._init_ids)))
        return uid

    def _half_open_count(self) -> int:
        return len(self._half_open_sas)

    def _stateless_reply(self, header, payloads: list, local: Addr, remote: Addr, *, now: float = 0.0,
                         request=None, name: str = "") -> None:
        """An IKE_SA_INIT answer without creating state (COOKIE, INVALID_KE_PAYLOAD,
        NO_PROPOSAL_CHOSEN). Both messages still reach the negotiation view."""
        data = encode_message(ExchangeType.IKE_SA_INIT, 0, header.spi_i, b"\0" * 8, FLAG_RESPONSE, payloads)
        if request is not None:
            uid = self._init_id(header.spi_i, remote)
            self.emit(ExchangeReceived(uid, name, summarize_lazy(header, request.payloads), now, local, remote))
            self.emit(ExchangeSent(uid, name, summarize_lazy(decode_header(data), payloads), now, local, remote))
        self.transmit(data, local, remote)

    def _init_request(self, data: bytes, header, local: Addr, remote: Addr, now: float) -> None:
        key = (header.spi_i, remote[0], remote[1])
        old = self._half_open.get(key)
        if old is not None:
            if old.init_request == data and old.cached is not None:
                self.count("retransmitted_request")
                old.transmit(old.cached.datagrams, now)
            return
        try:
            message = decode_message(data)
        except WireError as exc:
            self.count("malformed")
            log.debug("malformed IKE_SA_INIT from %s: %s", remote[0], exc)
            return
        payloads = list(message.payloads)
        sa_p = next((p for p in payloads if isinstance(p, SaPayload)), None)
        ke = next((p for p in payloads if isinstance(p, KePayload)), None)
        nonce = next((p for p in payloads if isinstance(p, NoncePayload)), None)
        if sa_p is None or ke is None or nonce is None or not 16 <= len(nonce.data) <= 256:
            self.count("malformed")
            self._stateless_reply(header, [NotifyPayload(NotifyType.INVALID_SYNTAX)], local, remote,
                                  now=now, request=message)
            return
        if now - self._cookie_secret[1] > COOKIE_SECRET_LIFETIME:
            self._old_cookie_secret = self._cookie_secret[0] if self._cookie_secret[1] > -1e17 else None
            self._cookie_secret = (self.rng(32), now)
        if self._half_open_count() >= self.policy.engine.half_open_threshold and \
                not self._cookie_ok(payloads, nonce.data, remote, header.spi_i, now):
            self.count("cookies_sent")
            cookie = cookie_value(self._cookie_secret[0], nonce.data, remote[0], header.spi_i)
            self._stateless_reply(header, [NotifyPayload(NotifyType.COOKIE, data=cookie)], local, remote,
                                  now=now, request=message)
            return
        candidates = self._candidates(local, remote)
        chosen = None
        accepted: list[ConnectionConfig] = []
        for conn in candidates:
            c = props.select(sa_p.proposals, conn.proposals)
            if c is not None:
                if chosen is None:
                    chosen = c
                if c == chosen or (c.encr, c.prf, c.integ, c.ke) == (chosen.encr, chosen.prf, chosen.integ, chosen.ke):
                    accepted.append(conn)
        unique_id = self._init_id(header.spi_i, remote)
        if chosen is None:
            name = candidates[0].name if len(candidates) == 1 else ""
            self._stateless_reply(header, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], local, remote,
                                  now=now, request=message, name=name)
            offered = props.describe_offer(sa_p.proposals)
            if not candidates:
                reason = (f"no connection is configured for {remote[0]} -> {local[0]}: add one whose "
                          "remote_addrs include the peer")
                ours: tuple[str, ...] = ()
            else:
                ours = tuple(x for c in candidates for x in props.describe_configured(c.proposals))
                reason = (f"none of the IKE proposals from {remote[0]} is acceptable. The peer offered: "
                          f"{'; '.join(offered)}. We accept: {'; '.join(ours)}.")
            name = candidates[0].name if len(candidates) == 1 else ""
            self.emit(NegotiationFailed(unique_id, name, "IKE_SA_INIT", "NO_PROPOSAL_CHOSEN", reason,
                                        None, False, ours, offered))
            log.warning("%s: %s", name or remote[0], reason, extra={"connection": name})
            return
        if ke.group != chosen.ke:
            log.info("%s: peer sent a KE for group %d, asking for %d (INVALID_KE_PAYLOAD)",
                     remote[0], ke.group, chosen.ke)
            self.count("invalid_ke_sent")
            self._stateless_reply(header, [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD,
                                                         data=chosen.ke.to_bytes(2, "big"))], local, remote,
                                  now=now, request=message, name=accepted[0].name)
            return
        mine = KeyExchange(chosen.ke)
        try:
            shared = mine.compute_shared(ke.data)
        except InvalidKeyExchange as exc:
            self.count("malformed")
            self._stateless_reply(header, [NotifyPayload(NotifyType.INVALID_SYNTAX)], local, remote,
                                  now=now, request=message, name=accepted[0].name)
            log.info("invalid KE from %s: %s", remote[0], exc)
            return
        conn = accepted[0]
        sa = IkeSa(self, conn, initiator=False, unique_id=unique_id, local=local, remote=remote,
                   spi_i=header.spi_i, spi_r=self.new_ike_spi(), now=now)
        sa.candidates = tuple(accepted)
        sa.chosen = chosen
        sa.nonce_i = nonce.data
        sa.nonce_r = self.rng(NONCE_SIZE)
        sa.init_request = data
        sa.mid_in = 1
        read_capabilities(sa, payloads)
        nat = check_nat(payloads, sa.spi_i, b"\0" * 8, local, remote)
        if nat is not None:
            sa.nat.local_behind, sa.nat.remote_behind = nat
        install_ike_keys(sa, shared)
        self.register(sa)
        self._half_open[key] = sa
        sa.half_open_key = key
        sa.set_state(IkeState.CONNECTING)
        self._half_open_sas.add(sa)
        sa.half_open_deadline = now + HALF_OPEN_TIMEOUT
        sa._summary_event(False, ExchangeType.IKE_SA_INIT, 0, False, payloads, len(data), now)
        fake = self.rng(20) if conn.encap else None
        response = [SaPayload((chosen.to_wire(),)), KePayload(mine.group, mine.public_bytes()),
                    NoncePayload(sa.nonce_r)]
        response += nat_notifies(sa.spi_i, sa.spi_r, local, remote, fake)
        response += capability_notifies(conn, want_hash_algorithms=any(
            c.local.auth == "pubkey" or c.remote.auth == "pubkey" for c in accepted))
        from engine.ike.certauth import certreq_payloads

        response += certreq_payloads(self, accepted)
        sa.send_response(ExchangeType.IKE_SA_INIT, 0, response, now)

    # ------------------------------------------------------------ status
    def status(self, now: float):
        """IkeSaInfo snapshots of every SA (counters are added by the runtime)."""
        return [ike_sa_info(sa, now) for sa in self._sas.values() if sa.state != IkeState.DESTROYED]

    # ------------------------------------------------------------ key export (engine.ops.keylog)
    def ike_keys(self, unique_id: int) -> dict | None:
        """SPIs, negotiated ENCR/INTEG and SK_e*/SK_a* of IKE SA #unique_id, for the opt-in Wireshark
        key export (``[engine] save_keys``) only; None until its keys exist. Never put these in an event."""
        for sa in self._sas.values():
            if sa.unique_id == unique_id and sa.keys is not None and sa.chosen is not None:
                return {"spi_i": sa.spi_i, "spi_r": sa.spi_r, "encr": sa.chosen.encr, "integ": sa.chosen.integ,
                        "keys": sa.keys}
        return None


@functools.lru_cache(maxsize=4096)
def _addr_match(pattern: str, addr: str) -> bool:
    if pattern in ("%any", "%any4", "%any6", "0.0.0.0", "::"):
        return True
    try:
        a = ipaddress.ip_address(addr)
        if "/" in pattern:
            return a in ipaddress.ip_network(pattern, strict=False)
        if "-" in pattern:
            lo, hi = pattern.split("-", 1)
            return ipaddress.ip_address(lo) <= a <= ipaddress.ip_address(hi)
        return a == ipaddress.ip_address(pattern)
    except ValueError:
        return pattern == addr
