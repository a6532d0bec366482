"""Every IKE SA of an endpoint and the identifiers they use: SAs by our SPI,
the half-open ones by initiator SPI and by source address (the front door's
limits), by peer address and identity (INITIAL_CONTACT), and the SPIs,
reqids and numbers handed out."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.events import IkeState

if TYPE_CHECKING:
    from engine.ike.sa import IkeSa

HalfOpenKey = tuple[bytes, str, int]
"""(initiator SPI, peer address, peer port) of an IKE_SA_INIT."""

ZERO_SPI = b"\0" * 8

KEPT_ANSWERS_MAX = 4096
"""Answers to IKE SA DELETEs kept at once (the oldest go first): ~200 bytes each."""

KEPT_ANSWER_REPLAYS = 8
"""Replays of one kept answer: a peer's whole retransmission schedule, no more."""


@dataclass
class KeptAnswer:
    """Our answer to the peer's DELETE of an IKE SA we then destroyed (RFC 7296 §2.1:
    a retransmitted request gets the same answer). If that answer is lost the peer
    retransmits into an SA that is gone; without this it would retry for its whole
    budget, then give up. Only an exact retransmission from the peer's address is
    answered: same SPIs and Message ID, a bounded number of times."""

    spi_i: bytes
    spi_r: bytes
    peer: str
    mid: int
    datagrams: list[bytes]
    until: float
    replays: int = 0

    def answers(self, spi_i: bytes, spi_r: bytes, mid: int, peer: str) -> bool:
        return (mid == self.mid and spi_i == self.spi_i and spi_r == self.spi_r and peer == self.peer
                and self.replays < KEPT_ANSWER_REPLAYS)


class Registry:
    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._rng = rng
        self._sas: dict[bytes, IkeSa] = {}
        """By our SPI."""
        self.get: Callable[[bytes], IkeSa | None] = self._sas.get
        """The IKE SA with this SPI of ours (a bound dict.get: it runs for every datagram)."""
        self._half_open: dict[HalfOpenKey, IkeSa] = {}
        self._half_open_by_ip: dict[str, int] = {}
        self.half_open: Callable[[HalfOpenKey], IkeSa | None] = self._half_open.get
        """The half-open IKE SA an IKE_SA_INIT came from (a bound dict.get: the front door asks per datagram)."""
        self.half_open_by_ip: dict[str, int] = self._half_open_by_ip
        """Half-open IKE SAs per peer address (read-only for the front door)."""
        self._by_addr: dict[tuple[str, str], set[IkeSa]] = {}
        """By (connection, peer address): whether our IKE_AUTH carries INITIAL_CONTACT."""
        self._by_identity: dict[tuple[str, str, str], set[IkeSa]] = {}
        """Authenticated IKE SAs by ``identity_of``: what an INITIAL_CONTACT replaces."""
        self._spis: set[bytes] = set()
        self._reserved_ike: dict[bytes, IkeSa | None] = {}
        """Our SPIs handed out and not registered yet -> the IKE SA whose rekey offers it (None for
        the other uses)."""
        self._reqids: dict[tuple[str, str], int] = {}
        self._next_reqid = 1
        self._next_ike = 1
        self._next_child = 1
        self._kept: OrderedDict[bytes, KeptAnswer] = OrderedDict()
        """By our SPI, oldest first (an OrderedDict: the oldest goes in O(1))."""

    # ------------------------------------------------------------ SAs
    def __iter__(self) -> Iterator[IkeSa]:
        return iter(list(self._sas.values()))

    def __len__(self) -> int:
        return len(self._sas)

    def add(self, sa: IkeSa) -> None:
        self._sas[sa.our_spi] = sa
        self._reserved_ike.pop(sa.our_spi, None)
        sa.addr_key = (sa.name, sa.remote[0])  # kept: the name and address may change later
        self._by_addr.setdefault(sa.addr_key, set()).add(sa)

    def remove(self, sa: IkeSa) -> None:
        if self._sas.get(sa.our_spi) is sa:
            del self._sas[sa.our_spi]
        self.leave_half_open(sa)
        for index, key in ((self._by_addr, sa.addr_key), (self._by_identity, sa.identity_key)):
            group = index.get(key) if key is not None else None
            if group is not None:
                group.discard(sa)
                if not group:
                    del index[key]

    @staticmethod
    def identity_of(sa: IkeSa) -> tuple[str, str, str]:
        """Whose IKE SAs an INITIAL_CONTACT (or unique = replace / keep) of ``sa``'s peer ends:
        (connection, "eap" and the EAP identity of a peer that authenticated with one, else "ike" and
        its IKE identity). As charon's check_uniqueness (get_other_eap_id: the EAP identity when there
        is one, in place of the IKE identity): Windows sends its address as IDi, so two users behind
        the same private address are two peers, and one user on a second device (another IKE
        identity) is the same peer."""
        if sa.eap_identity and sa.conn is not None and sa.conn.remote.is_eap:
            return (sa.name, "eap", sa.eap_identity)
        return (sa.name, "ike", str(sa.remote_id))

    def index_identity(self, sa: IkeSa) -> None:
        """``sa`` is authenticated: an INITIAL_CONTACT from its peer will find it."""
        sa.identity_key = self.identity_of(sa)
        self._by_identity.setdefault(sa.identity_key, set()).add(sa)

    def same_identity(self, sa: IkeSa) -> list[IkeSa]:
        return [o for o in self._by_identity.get(sa.identity_key, ()) if o is not sa]

    def with_identity(self, key: tuple[str, str, str]) -> list[IkeSa]:
        """The authenticated IKE SAs of ``identity_of`` ``key``, before ``sa`` is indexed."""
        return list(self._by_identity.get(key, ()))

    def same_address(self, sa: IkeSa) -> list[IkeSa]:
        return [o for o in self._by_addr.get((sa.name, sa.remote[0]), ()) if o is not sa]

    def current(self, name: str) -> IkeSa | None:
        """The IKE SA a command on connection ``name`` should use: one that is up,
        being rekeyed or being set up (not one replaced or going away)."""
        for sa in self._sas.values():
            if sa.name == name and sa.state in (IkeState.ESTABLISHED, IkeState.REKEYING, IkeState.CONNECTING):
                return sa
        return None

    # ------------------------------------------------------------ answers outliving their SA
    def keep_answer(self, our_spi: bytes, kept: KeptAnswer, now: float) -> None:
        self._expire_kept(now)
        self._kept.pop(our_spi, None)
        while len(self._kept) >= KEPT_ANSWERS_MAX:
            self._kept.popitem(last=False)
        self._kept[our_spi] = kept

    def kept_answer(self, our_spi: bytes, now: float) -> KeptAnswer | None:
        if not self._kept:
            return None
        self._expire_kept(now)
        return self._kept.get(our_spi)

    def _expire_kept(self, now: float) -> None:
        kept = self._kept
        while kept:
            spi = next(iter(kept))
            if kept[spi].until > now:
                return
            kept.popitem(last=False)

    # ------------------------------------------------------------ half-open SAs
    def enter_half_open(self, sa: IkeSa, key: HalfOpenKey) -> None:
        self._half_open[key] = sa
        sa.half_open_key = key
        self._half_open_by_ip[key[1]] = self._half_open_by_ip.get(key[1], 0) + 1

    def leave_half_open(self, sa: IkeSa) -> None:
        key = sa.half_open_key
        if key is None:
            return
        sa.half_open_key = None
        if self._half_open.get(key) is sa:
            del self._half_open[key]
        n = self._half_open_by_ip.get(key[1], 0) - 1
        if n > 0:
            self._half_open_by_ip[key[1]] = n
        else:
            self._half_open_by_ip.pop(key[1], None)

    def half_open_count(self) -> int:
        return len(self._half_open)

    def half_open_from(self, addr: str) -> int:
        return self._half_open_by_ip.get(addr, 0)

    # ------------------------------------------------------------ identifiers (host.Ids)
    def new_ike_spi(self, rekeyed: IkeSa | None = None) -> bytes:
        """A fresh IKE SPI of ours, reserved until an SA registers it or it is released;
        ``rekeyed``: the IKE SA whose rekey (ours) offers it for the new SA."""
        while True:
            spi = self._rng(8)
            if spi != ZERO_SPI and spi not in self._sas and spi not in self._reserved_ike:
                self._reserved_ike[spi] = rekeyed
                return spi

    def release_ike_spi(self, spi: bytes) -> None:
        self._reserved_ike.pop(spi, None)

    def rekeying_to(self, spi: bytes) -> IkeSa | None:
        """The IKE SA whose rekey, in flight, offers ``spi`` (ours) for the new IKE SA."""
        return self._reserved_ike.get(spi)

    def allocate_spi(self) -> bytes:
        """A fresh inbound ESP/AH SPI (0-255 are reserved, RFC 4303 §2.1)."""
        while True:
            spi = self._rng(4)
            if int.from_bytes(spi, "big") >= 256 and spi not in self._spis:
                self._spis.add(spi)
                return spi

    def release_spi(self, spi: bytes) -> None:
        self._spis.discard(spi)

    def next_ike_id(self) -> int:
        n = self._next_ike
        self._next_ike += 1
        return n

    def next_child_id(self) -> int:
        n = self._next_child
        self._next_child += 1
        return n

    def reqid(self, connection: str, child: str) -> int:
        """The reqid of a CHILD config, stable for the engine's life: the kernel's
        policies (and trap policies, before any IKE SA exists) are tied to it."""
        key = (connection, child)
        if key not in self._reqids:
            self._reqids[key] = self._next_reqid
            self._next_reqid += 1
        return self._reqids[key]

    def reqid_owner(self, reqid: int) -> tuple[str, str] | None:
        for key, r in self._reqids.items():
            if r == reqid:
                return key
        return None

    def spis_in_use(self) -> int:
        return len(self._spis)
