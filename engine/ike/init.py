"""IKE_SA_INIT pieces shared by both roles: NAT detection (§2.23), the
status notifies we advertise, and the IKE key schedule (§2.14)."""

from __future__ import annotations

from engine.crypto.auth import nat_detection_hash
from engine.crypto.keys import derive_ike_keys
from engine.crypto.signature import hash_algorithms_notify_data, parse_hash_algorithms
from engine.ike.protection import SkCodec
from engine.wire.constants import NotifyType
from engine.wire.payloads import NotifyPayload, VendorIdPayload

NONCE_SIZE = 32
_NAT_D_SOURCE_MEMBER = NotifyType.NAT_DETECTION_SOURCE_IP
_NAT_D_DESTINATION_MEMBER = NotifyType.NAT_DETECTION_DESTINATION_IP
"""Read once: on Python 3.11 each ``NotifyType.X`` read goes through EnumType.__getattr__'s hook (~1k
instructions). The notifies keep the members, as before."""


def nat_notifies(spi_i: bytes, spi_r: bytes, local: tuple[str, int], remote: tuple[str, int],
                 fake_source: bytes | None = None) -> list[NotifyPayload]:
    """NAT_DETECTION_SOURCE_IP and _DESTINATION_IP. ``fake_source`` replaces
    the source hash to force UDP encapsulation (``encap = yes``), as charon does."""
    src = fake_source if fake_source is not None else nat_detection_hash(spi_i, spi_r, local[0], local[1])
    dst = nat_detection_hash(spi_i, spi_r, remote[0], remote[1])
    return [NotifyPayload(_NAT_D_SOURCE_MEMBER, data=src),
            NotifyPayload(_NAT_D_DESTINATION_MEMBER, data=dst)]


_NAT_D_SOURCE = int(NotifyType.NAT_DETECTION_SOURCE_IP)
_NAT_D_DESTINATION = int(NotifyType.NAT_DETECTION_DESTINATION_IP)


def check_nat(payloads, spi_i: bytes, spi_r: bytes, local: tuple[str, int],
              remote: tuple[str, int]) -> tuple[bool, bool] | None:
    """(we are behind a NAT, the peer is behind a NAT), or None unless the peer sent both kinds of NAT-D
    (§2.23 has both in every IKE_SA_INIT; charon's ike_natd decides only when src_seen && dst_seen)."""
    sources = []
    dest = []
    for p in payloads:  # one pass, the types as plain ints (an IntEnum member read costs a lookup)
        if isinstance(p, NotifyPayload):
            t = p.type
            if t == _NAT_D_SOURCE:
                sources.append(p.data)
            elif t == _NAT_D_DESTINATION:
                dest.append(p.data)
    if not sources or not dest:
        return None
    expect_src = nat_detection_hash(spi_i, spi_r, remote[0], remote[1])
    expect_dst = nat_detection_hash(spi_i, spi_r, local[0], local[1])
    return expect_dst not in dest, expect_src not in sources


# Our Vendor ID: lets two ipsec-console peers find each other (jumbo ESP offload).
VENDOR_ID = b"ipsec-console 1\0"


_OUR_VENDOR_ID = VendorIdPayload(VENDOR_ID)
_FRAGMENTATION_SUPPORTED = NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)
"""Payloads are frozen values: every IKE_SA_INIT sends these same two."""


def capability_notifies(conn, *, want_hash_algorithms: bool) -> list:
    out: list = [_OUR_VENDOR_ID]
    if conn is None or conn.fragmentation:
        out.append(_FRAGMENTATION_SUPPORTED)
    if want_hash_algorithms:
        out.append(NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=hash_algorithms_notify_data()))
    return out


_FRAGMENTATION_SUPPORTED_T = int(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)
_REDIRECT_T = (int(NotifyType.REDIRECT_SUPPORTED), int(NotifyType.REDIRECTED_FROM))
_USE_PPK_T = int(NotifyType.USE_PPK)
_INTERMEDIATE_T = int(NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED)
_HASH_ALGORITHMS_T = int(NotifyType.SIGNATURE_HASH_ALGORITHMS)
"""Plain ints: the loop below compares every notify of an IKE_SA_INIT with each (an IntEnum member
read goes through the enum's class lookup)."""


def read_capabilities(sa, payloads) -> None:
    for p in payloads:
        if isinstance(p, VendorIdPayload) and p.data == VENDOR_ID:
            sa.peer_is_ours = True
        if not isinstance(p, NotifyPayload):
            continue
        t = p.type
        if t == _FRAGMENTATION_SUPPORTED_T:
            sa.peer_fragmentation = True
        elif t in _REDIRECT_T:
            # A client that was redirected says so instead, and can follow again (RFC 5685 §5).
            sa.peer_redirect_supported = True
        elif t == _USE_PPK_T:
            sa.use_ppk = True
        elif t == _INTERMEDIATE_T:
            sa.peer_intermediate = True
        elif t == _HASH_ALGORITHMS_T:
            sa.peer_hash_algorithms = frozenset(parse_hash_algorithms(p.data))


def install_ike_keys(sa, shared: bytes, *, old_sk_d: bytes | None = None, old_prf: int | None = None,
                     additional: bytes = b"") -> None:
    """Derive SKEYSEED and the seven keys; set up SK protection for our role.
    ``additional``: SK(1) | ... | SK(n) of a rekey's IKE_FOLLOWUP_KE rounds (RFC 9370 §2.2.4)."""
    c = sa.chosen
    encr_id, key_bits = c.encr
    _, keys = derive_ike_keys(c.prf, encr_id, key_bits, c.integ, sa.nonce_i, sa.nonce_r, shared,
                              sa.spi_i, sa.spi_r, old_sk_d=old_sk_d, old_prf_id=old_prf,
                              additional_secrets=additional)
    set_ike_keys(sa, keys)


def set_ike_keys(sa, keys) -> None:
    """Make ``keys`` the IKE SA's keys and SK protection (also after an RFC 9370 key update)."""
    c = sa.chosen
    encr_id, key_bits = c.encr
    sa.keys = keys
    k = {n: getattr(keys, n).reveal() for n in ("sk_ei", "sk_er", "sk_ai", "sk_ar")}
    if sa.original_initiator:
        sa.sk = SkCodec(encr_id, key_bits, c.integ, k["sk_ei"], k["sk_ai"], k["sk_er"], k["sk_ar"], sa.host.rng)
    else:
        sa.sk = SkCodec(encr_id, key_bits, c.integ, k["sk_er"], k["sk_ar"], k["sk_ei"], k["sk_ai"], sa.host.rng)
