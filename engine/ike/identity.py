"""IKE identities on the wire (RFC 7296 §3.5) <-> engine.policy.model.Identity."""

from __future__ import annotations

import ipaddress

from engine.pki.dn import dn_from_der, dn_to_der
from engine.policy.identity import identity_matches
from engine.policy.model import Identity
from engine.wire.constants import IdType

# Members read once: on Python 3.11 each Enum.MEMBER read goes through EnumType.__getattr__'s hook
# (~1k instructions), and these are read for every message of a handshake.
_FQDN = IdType.FQDN


def identity_to_wire(identity: Identity | None, ike_addr: str) -> tuple[int, bytes]:
    """The (ID type, data) we send; no configured ID means our IKE address."""
    if identity is None or identity.kind == "any":
        addr = ipaddress.ip_address(ike_addr)
        return (IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR), addr.packed
    kind = identity.kind
    if kind == "fqdn":
        return _FQDN, identity.value.encode("idna") if not identity.value.isascii() else identity.value.encode()
    if kind == "rfc822":
        return IdType.RFC822_ADDR, identity.value.encode()
    if kind == "ipv4":
        return IdType.IPV4_ADDR, ipaddress.IPv4Address(identity.value).packed
    if kind == "ipv6":
        return IdType.IPV6_ADDR, ipaddress.IPv6Address(identity.value).packed
    if kind == "key_id":
        value = identity.value
        if value.startswith("#"):
            return IdType.KEY_ID, bytes.fromhex(value[1:])
        return IdType.KEY_ID, value.encode()
    if kind == "dn":
        return IdType.DER_ASN1_DN, dn_to_der(identity.value)
    raise ValueError(f"cannot send an identity of kind {kind!r}")


_from_wire: dict[tuple[int, bytes], Identity] = {}
_FROM_WIRE_MAX = 256
_FROM_WIRE_BYTES = 512  # longer IDs (a big DN) are read again each time: the memo stays small


def identity_from_wire(id_type: int, data: bytes) -> Identity:
    """A readable Identity for what the peer sent (used for matching and display).

    The same (type, data) gives one shared Identity (frozen): a gateway reads the same few IDs all
    day, and reading one (a dataclass built, a DN parsed) cost more than the lookup. At most
    _FROM_WIRE_MAX of them, each of at most _FROM_WIRE_BYTES: a peer cannot grow it."""
    if type(data) is not bytes:
        return _read_identity(id_type, data)
    key = (id_type, data)
    found = _from_wire.get(key)
    if found is None:
        found = _read_identity(id_type, data)
        if len(data) <= _FROM_WIRE_BYTES:
            if len(_from_wire) >= _FROM_WIRE_MAX:
                _from_wire.clear()
            _from_wire[key] = found
    return found


def _read_identity(id_type: int, data: bytes) -> Identity:
    try:
        if id_type == IdType.FQDN:
            return Identity("fqdn", data.decode("ascii"))
        if id_type == IdType.RFC822_ADDR:
            return Identity("rfc822", data.decode("ascii"))
        if id_type == IdType.IPV4_ADDR and len(data) == 4:
            return Identity("ipv4", str(ipaddress.IPv4Address(data)))
        if id_type == IdType.IPV6_ADDR and len(data) == 16:
            return Identity("ipv6", str(ipaddress.IPv6Address(data)))
        if id_type == IdType.DER_ASN1_DN:
            return Identity("dn", dn_from_der(data))
    except (UnicodeDecodeError, ValueError):
        pass
    return Identity("key_id", "#" + data.hex())


def identity_text(identity: Identity | None, ike_addr: str) -> str:
    if identity is None or identity.kind == "any":
        return ike_addr
    return identity.value


def matches(pattern: Identity | None, peer: Identity) -> bool:
    """Whether the peer's identity satisfies the configured one (None or %any: anyone).
    Wildcards follow swanctl: ``*@example.org``, ``*.example.org``."""
    if pattern is None or pattern.kind == "any":
        return True
    return identity_matches(pattern, peer)
