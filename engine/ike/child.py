"""CHILD SAs as the IKE engine sees them: negotiated parameters, keys
(RFC 7296 §2.17), lifetimes; and the events that hand them to a datapath."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.crypto.encr import encr_keymat_size
from engine.crypto.integ import integ_key_size
from engine.crypto.keys import child_keymat, split_child_keymat
from engine.events import ChildKeys, ChildSaDeleted, ChildSaInstalled, ChildState
from engine.ike.proposals import Chosen
from engine.ike.state import check_child
from engine.policy.model import ChildConfig
from engine.policy.ts import TrafficSelector
from engine.secret import secret_of
from engine.wire.constants import ProtocolId

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_AH = ProtocolId.AH


@dataclass
class ChildSa:
    """One CHILD SA pair (inbound and outbound) of an IKE SA."""

    config: ChildConfig
    unique_id: int
    reqid: int
    chosen: Chosen
    spi_in: bytes
    """Our inbound SPI (we picked it)."""
    spi_out: bytes
    """The peer's inbound SPI = our outbound SPI."""
    mode: str
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    keys: ChildKeys = field(repr=False)
    initiator: bool
    """We initiated the exchange that created it."""
    installed_at: float
    rekey_at: float | None
    expire_at: float | None
    nonces: tuple[bytes, bytes] = (b"", b"")
    """(Ni, Nr) of the creating exchange; the lowest nonce decides rekey collisions (§2.8.1)."""
    ke_group: int | None = None
    state: ChildState = ChildState.CREATED
    rekeyed_from: bytes | None = None
    deadline: float | None = None
    """REKEYED: the peer should have deleted it by then (we delete it ourselves after)."""
    unconfirmed_mid: int | None = None
    """We created it answering the peer's request with this Message ID: until the peer's
    next request shows it has our answer, the peer may not know this SA yet."""
    unconfirmed_until: float = 0.0
    """...or until this time (a retransmission budget later): by then the peer has our
    answer or has given up on the IKE SA."""

    @property
    def protocol(self) -> str:
        return "ah" if self.chosen.protocol == _AH else "esp"

    @property
    def spi_in_int(self) -> int:
        return int.from_bytes(self.spi_in, "big")

    @property
    def spi_out_int(self) -> int:
        return int.from_bytes(self.spi_out, "big")

    def set_state(self, new: ChildState) -> None:
        check_child(self.state, new)
        self.state = new


def derive_child_keys(prf_id: int, sk_d: bytes, chosen: Chosen, nonce_i: bytes, nonce_r: bytes,
                      initiator: bool, shared: bytes | list[bytes] | None = None) -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr [| SK(1) | ... | SK(n)]), split initiator->responder
    first. ``shared`` lists several secrets after IKE_FOLLOWUP_KE rounds (RFC 9370 §2.2.4)."""
    additional = b""
    if isinstance(shared, list):
        shared, additional = shared[0], b"".join(shared[1:])
    if chosen.encr is not None:
        encr_len = encr_keymat_size(chosen.encr[0], chosen.encr[1])
    else:
        encr_len = 0
    integ_len = integ_key_size(chosen.integ) if chosen.integ else 0
    keymat = child_keymat(prf_id, sk_d, nonce_i, nonce_r, 2 * (encr_len + integ_len), shared,
                          additional_secrets=additional)
    ei, ai, er, ar = split_child_keymat(keymat, encr_len, integ_len)
    if initiator:
        return ChildKeys(encr_in=secret_of(er), integ_in=secret_of(ar), encr_out=secret_of(ei), integ_out=secret_of(ai))
    return ChildKeys(encr_in=secret_of(ei), integ_in=secret_of(ai), encr_out=secret_of(er), integ_out=secret_of(ar))


def installed_event(child: ChildSa, *, ike_sa: int, connection: str, local: tuple[str, int],
                    remote: tuple[str, int], encap: bool, peer_is_ours: bool = False) -> ChildSaInstalled:
    c = child.config
    return ChildSaInstalled(
        ike_sa=ike_sa,
        connection=connection,
        child=c.name,
        unique_id=child.unique_id,
        reqid=child.reqid,
        protocol=child.protocol,
        mode=child.mode,
        spi_in=child.spi_in_int,
        spi_out=child.spi_out_int,
        local_addr=local[0],
        remote_addr=remote[0],
        local_ts=child.local_ts,
        remote_ts=child.remote_ts,
        encr_id=child.chosen.encr[0] if child.chosen.encr else None,
        encr_key_length=child.chosen.encr[1] if child.chosen.encr else None,
        integ_id=child.chosen.integ,
        esn=child.chosen.esn,
        keys=child.keys,
        encap=encap,
        local_port=local[1] if encap else 0,
        remote_port=remote[1] if encap else 0,
        replay_window=c.replay_window,
        soft_bytes=c.rekey_bytes,
        hard_bytes=c.life_bytes,
        soft_packets=c.rekey_packets,
        hard_packets=c.life_packets,
        rekeyed_from=int.from_bytes(child.rekeyed_from, "big") if child.rekeyed_from else None,
        initiator=child.initiator,
        peer_is_ours=peer_is_ours,
    )


def deleted_event(child: ChildSa, *, ike_sa: int, connection: str, local: tuple[str, int],
                  remote: tuple[str, int], reason: str) -> ChildSaDeleted:
    return ChildSaDeleted(
        ike_sa=ike_sa,
        connection=connection,
        child=child.config.name,
        unique_id=child.unique_id,
        reqid=child.reqid,
        protocol=child.protocol,
        spi_in=child.spi_in_int,
        spi_out=child.spi_out_int,
        local_addr=local[0],
        remote_addr=remote[0],
        reason=reason,
    )
