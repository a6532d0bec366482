"""Status snapshots: what ``ipsec-console sas`` lists, the control socket
returns and the console's tables show. Immutable; built by the runtime from
the engine's IKE SAs and the datapath counters.

The JSON form (``to_dict``) is the stable schema of ``sas --json`` documented
in README.md: fields are only ever added, never renamed or removed.
Times are seconds relative to the snapshot (``*_ago`` in the past, ``*_in``
in the future, None when not scheduled), plus the snapshot's wall-clock time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.jsonable import dataclass_from_dict, to_jsonable

QUANTUM_SAFE_KE_NAMES = frozenset({"ML_KEM_512", "ML_KEM_768", "ML_KEM_1024"})
"""strongSwan's names of the key exchange methods that resist a quantum computer."""


def is_quantum_safe(ke: str = "", additional_ke: Iterable[str] = (), ppk: bool = False,
                    parent_quantum_safe: bool = False) -> bool:
    """Whether an SA's keys resist a quantum computer: a PPK went into them (RFC 8784), one of
    their key exchanges was ML-KEM (``ke`` or an RFC 9370 additional one, e.g.
    ``KE1_ML_KEM_768``), or they derive from a quantum-safe IKE SA's SK_d
    (``parent_quantum_safe``, for CHILD SAs and rekeyed IKE SAs)."""
    if ppk or parent_quantum_safe or ke in QUANTUM_SAFE_KE_NAMES:
        return True
    return any(name.partition("_")[2] in QUANTUM_SAFE_KE_NAMES for name in additional_ke)


@dataclass(frozen=True)
class ChildSaInfo:
    name: str
    """Child config name."""
    unique_id: int
    reqid: int
    state: str
    """INSTALLED, REKEYING, REKEYED, DELETING, ..."""
    protocol: str
    """esp or ah."""
    mode: str
    """tunnel or transport."""
    encap: bool
    """UDP-encapsulated (TUNNEL-in-UDP in swanctl)."""
    spi_in: int
    spi_out: int
    encr: str = ""
    """e.g. AES_GCM_16_256 (empty for AH)."""
    integ: str = ""
    """e.g. HMAC_SHA2_256_128 (empty with AEAD)."""
    ke: str = ""
    """PFS group of the last rekey, if any."""
    esn: bool = False
    local_ts: tuple[str, ...] = ()
    remote_ts: tuple[str, ...] = ()
    bytes_in: int = 0
    packets_in: int = 0
    bytes_out: int = 0
    packets_out: int = 0
    last_in_ago: float | None = None
    last_out_ago: float | None = None
    installed_ago: float = 0.0
    rekey_in: float | None = None
    expire_in: float | None = None
    drops: tuple[tuple[str, int], ...] = ()
    """Inbound drops by reason (replay, icv, malformed, policy_mismatch)."""
    additional_ke: tuple[str, ...] = ()
    """RFC 9370 additional key exchanges of the last rekey, strongSwan names (KE1_ML_KEM_768)."""
    quantum_safe: bool = False
    """Keys from a quantum-safe IKE SA's SK_d or from an ML-KEM exchange of its own (is_quantum_safe)."""


@dataclass(frozen=True)
class IkeSaInfo:
    name: str
    """Connection name."""
    unique_id: int
    state: str
    """CONNECTING, ESTABLISHED, REKEYING, DELETING, ..."""
    initiator: bool
    """True when we initiated this IKE SA or its last rekey (the header's Initiator flag, §2.18)."""
    spi_i: int
    spi_r: int
    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int
    local_id: str = ""
    remote_id: str = ""
    """Identities as display strings, like eap_identity and cert_subject: a character that is not
    printable (a peer's ESC, BEL, line break) is written as an escape (engine.printable.escape)."""
    encr: str = ""
    integ: str = ""
    prf: str = ""
    ke: str = ""
    nat_local: bool = False
    """We are behind a NAT (our NAT_DETECTION_SOURCE_IP did not match)."""
    nat_remote: bool = False
    """The peer is behind a NAT (or fakes one, as strongSwan's libipsec does)."""
    established_ago: float | None = None
    rekey_in: float | None = None
    reauth_in: float | None = None
    expire_in: float | None = None
    children: tuple[ChildSaInfo, ...] = ()
    additional_ke: tuple[str, ...] = ()
    """RFC 9370 additional key exchanges, strongSwan names (KE1_ML_KEM_768, KE2_ML_KEM_1024)."""
    ppk: bool = False
    """An RFC 8784 Postquantum Preshared Key went into the keys."""
    quantum_safe: bool = False
    """ML-KEM (primary or additional) or a PPK protects the keys, or they derive from such an
    SA (a rekey); see is_quantum_safe."""
    virtual_ips: tuple[str, ...] = ()
    """Virtual IPs of the peer (leased from our pools, RFC 7296 §3.15), or ours when we asked for one."""
    eap_identity: str = ""
    """The EAP identity the peer authenticated as (EAP-MSCHAPv2 user name), empty without EAP."""
    eap_method: str = ""
    """EAP-MSCHAPv2, EAP-TLS, ... (empty without EAP)."""
    cert_subject: str = ""
    """Subject DN of the peer's certificate (IKE or EAP-TLS), empty without one."""
    mobike_moves: int = 0
    """How many times MOBIKE moved the SA to a new address (RFC 4555)."""
    pool: str = ""
    """The pool its virtual IP came from."""
    connection_initiator: bool | None = None
    """We set the connection up (IkeSa.connection_initiator, charon's COND_ORIGINAL_INITIATOR):
    unlike ``initiator`` (the header role, as charon's vici list-sas) it survives an IKE rekey the
    other side initiated. None from a source that does not say (``initiator`` then stands in)."""


@dataclass(frozen=True)
class ChildConfigInfo:
    name: str
    mode: str
    protocol: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    proposals: tuple[str, ...]
    start_action: str
    dpd_action: str
    close_action: str = "none"
    """When the peer closes the CHILD SA (none, trap, start)."""


@dataclass(frozen=True)
class ConnectionInfo:
    """A configured connection, like ``swanctl --list-conns``."""

    name: str
    local_addrs: tuple[str, ...]
    remote_addrs: tuple[str, ...]
    local_auth: str
    remote_auth: str
    local_id: str
    remote_id: str
    proposals: tuple[str, ...]
    children: tuple[ChildConfigInfo, ...] = ()
    state: str = "down"
    """down, connecting, up (at least one IKE SA established), failing."""


@dataclass(frozen=True)
class PoolInfo:
    """Usage of one ``[pools.NAME]`` (engine.pools.PoolUsage)."""

    name: str
    addrs: str
    size: int
    used: int
    """Addresses held by connected clients."""
    remembered: int = 0
    """Released addresses kept for their last client."""


@dataclass(frozen=True)
class StatusSnapshot:
    time: float
    """Wall-clock time of the snapshot (Unix seconds)."""
    ike_sas: tuple[IkeSaInfo, ...] = ()
    connections: tuple[ConnectionInfo, ...] = ()
    pools: tuple[PoolInfo, ...] = ()
    """Virtual IP pools and their usage."""


def to_dict(obj) -> dict:
    return to_jsonable(obj)


def ike_sa_from_dict(data: dict) -> IkeSaInfo:
    return dataclass_from_dict(IkeSaInfo, data)


def connection_from_dict(data: dict) -> ConnectionInfo:
    return dataclass_from_dict(ConnectionInfo, data)


def pool_from_dict(data: dict) -> PoolInfo:
    return dataclass_from_dict(PoolInfo, data)
