"""Kernel SAs: IKEv2 transform IDs -> Linux crypto names, and NEWSA messages.

The key material in ``ChildSaInstalled.keys`` is what RFC 7296 §2.17 derives:
for the AEAD ciphers it includes the salt (4 bytes for GCM, GMAC and
ChaCha20-Poly1305, 3 for CCM), which the kernel expects at the key's end, and
so does the AES-CTR nonce (RFC 3686).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from engine.crypto.transforms import EncrId, IntegId, transform_name
from engine.datapath.kernel_policy import MODES, PROTOCOLS
from engine.datapath.natmap import MAPPING_HOLD
from engine.esp.sa import SEQ_MAX_32, SEQ_SOFT_32
from engine.datapath.xfrm_netlink import (
    UDP_ENCAP_ESPINUDP,
    XFRM_INF,
    XFRM_MODE_TUNNEL,
    XFRM_STATE_AF_UNSPEC,
    XFRM_STATE_ALIGN4,
    XFRM_STATE_ESN,
    XFRMA_REPLAY_ESN_MAX,
    xfrm_usersa_id,
    xfrm_usersa_info,
)
from engine.events import ChildSaInstalled

NATT_PORT = 4500
LEGACY_REPLAY_MAX = 32
"""Windows up to 32 packets fit the legacy u8 replay_window; larger ones (and
ESN) need the XFRMA_REPLAY_ESN_VAL bitmap."""


class SaConfigError(ValueError):
    """A ChildSaInstalled the kernel datapath cannot install as given."""


@dataclass(frozen=True)
class Cipher:
    """How the kernel names an ENCR transform."""

    attr: str
    """XFRMA_ALG_AEAD or XFRMA_ALG_CRYPT."""
    name: str
    salt: int
    """Bytes of salt/nonce appended to the key."""
    icv_bits: int = 0
    """AEAD ICV length; 0 for plain ciphers."""
    fixed_key_bits: int | None = None
    """Key size for ciphers without a KEY_LENGTH attribute."""


CIPHERS: dict[int, Cipher] = {
    EncrId.AES_GCM_16: Cipher("XFRMA_ALG_AEAD", "rfc4106(gcm(aes))", 4, 128),
    EncrId.AES_GCM_12: Cipher("XFRMA_ALG_AEAD", "rfc4106(gcm(aes))", 4, 96),
    EncrId.AES_GCM_8: Cipher("XFRMA_ALG_AEAD", "rfc4106(gcm(aes))", 4, 64),
    EncrId.AES_CCM_16: Cipher("XFRMA_ALG_AEAD", "rfc4309(ccm(aes))", 3, 128),
    EncrId.AES_CCM_12: Cipher("XFRMA_ALG_AEAD", "rfc4309(ccm(aes))", 3, 96),
    EncrId.AES_CCM_8: Cipher("XFRMA_ALG_AEAD", "rfc4309(ccm(aes))", 3, 64),
    EncrId.NULL_AUTH_AES_GMAC: Cipher("XFRMA_ALG_AEAD", "rfc4543(gcm(aes))", 4, 128),
    EncrId.CHACHA20_POLY1305: Cipher("XFRMA_ALG_AEAD", "rfc7539esp(chacha20,poly1305)", 4, 128, 256),
    EncrId.AES_CBC: Cipher("XFRMA_ALG_CRYPT", "cbc(aes)", 0),
    EncrId.AES_CTR: Cipher("XFRMA_ALG_CRYPT", "rfc3686(ctr(aes))", 4),
    EncrId.CAMELLIA_CBC: Cipher("XFRMA_ALG_CRYPT", "cbc(camellia)", 0),
    EncrId.TRIPLE_DES: Cipher("XFRMA_ALG_CRYPT", "cbc(des3_ede)", 0, fixed_key_bits=192),
    EncrId.NULL: Cipher("XFRMA_ALG_CRYPT", "ecb(cipher_null)", 0, fixed_key_bits=0),
}


@dataclass(frozen=True)
class Integrity:
    """How the kernel names an INTEG transform (always XFRMA_ALG_AUTH_TRUNC)."""

    name: str
    key_bits: int
    trunc_bits: int


INTEGRITY: dict[int, Integrity] = {
    IntegId.HMAC_MD5_96: Integrity("hmac(md5)", 128, 96),
    IntegId.HMAC_SHA1_96: Integrity("hmac(sha1)", 160, 96),
    IntegId.AES_XCBC_96: Integrity("xcbc(aes)", 128, 96),
    IntegId.AES_CMAC_96: Integrity("cmac(aes)", 128, 96),
    IntegId.HMAC_SHA2_256_128: Integrity("hmac(sha256)", 256, 128),
    IntegId.HMAC_SHA2_384_192: Integrity("hmac(sha384)", 384, 192),
    IntegId.HMAC_SHA2_512_256: Integrity("hmac(sha512)", 512, 256),
}


def family_of(addr: str) -> int:
    try:
        return int(socket.AF_INET if ipaddress.ip_address(addr).version == 4 else socket.AF_INET6)
    except ValueError:
        raise SaConfigError(f"{addr!r} is not an IP address") from None


def _encryption_attr(ev: ChildSaInstalled, key: bytes) -> tuple[str, dict]:
    cipher = CIPHERS.get(ev.encr_id)  # type: ignore[arg-type]
    name = transform_name(1, ev.encr_id or 0, ev.encr_key_length)
    if cipher is None:
        raise SaConfigError(f"child {ev.child!r}: the kernel datapath does not support ESP encryption {name}")
    bits = cipher.fixed_key_bits if cipher.fixed_key_bits is not None else ev.encr_key_length
    if bits is None:
        raise SaConfigError(f"child {ev.child!r}: {name} needs a key length")
    want = bits // 8 + cipher.salt
    if len(key) != want:
        salt = f" ({bits // 8} + {cipher.salt} salt)" if cipher.salt else ""
        raise SaConfigError(f"child {ev.child!r}: {name} needs a {want}-byte key{salt}, got {len(key)} bytes")
    value = {"alg_name": cipher.name, "alg_key_len": len(key) * 8, "alg_key": key}
    if cipher.attr == "XFRMA_ALG_AEAD":
        value["alg_icv_len"] = cipher.icv_bits
    return cipher.attr, value


def _integrity_attr(ev: ChildSaInstalled, key: bytes) -> tuple[str, dict]:
    integ = INTEGRITY.get(ev.integ_id)  # type: ignore[arg-type]
    name = transform_name(3, ev.integ_id or 0)
    if integ is None:
        raise SaConfigError(f"child {ev.child!r}: the kernel datapath does not support integrity {name}")
    if len(key) * 8 != integ.key_bits:
        raise SaConfigError(f"child {ev.child!r}: {name} needs a {integ.key_bits // 8}-byte key, got {len(key)} bytes")
    return "XFRMA_ALG_AUTH_TRUNC", {"alg_name": integ.name, "alg_key_len": integ.key_bits,
                                    "alg_trunc_len": integ.trunc_bits, "alg_key": key}


def _limit(value: int) -> int:
    return value if value > 0 else XFRM_INF


def build_sa(ev: ChildSaInstalled, inbound: bool, kreqid: int) -> xfrm_usersa_info:
    """The NEWSA message for one direction of ``ev``."""
    if ev.protocol not in PROTOCOLS:
        raise SaConfigError(f"child {ev.child!r}: protocol {ev.protocol!r} is neither esp nor ah")
    if ev.mode not in MODES:
        raise SaConfigError(f"child {ev.child!r}: mode {ev.mode!r} is neither tunnel nor transport")
    family = family_of(ev.local_addr)
    if family_of(ev.remote_addr) != family:
        raise SaConfigError(f"child {ev.child!r}: {ev.local_addr} and {ev.remote_addr} are of different families")
    src, dst = (ev.remote_addr, ev.local_addr) if inbound else (ev.local_addr, ev.remote_addr)
    spi = ev.spi_in if inbound else ev.spi_out
    if not 0x100 <= spi <= 0xFFFFFFFF:
        raise SaConfigError(f"child {ev.child!r}: SPI 0x{spi:x} is outside 0x100-0xffffffff (RFC 4303 §2.1)")
    keys = ev.keys
    encr_key = (keys.encr_in if inbound else keys.encr_out).reveal()
    integ_key = (keys.integ_in if inbound else keys.integ_out).reveal()
    mode = MODES[ev.mode]

    attrs: list[tuple[str, object]] = []
    if ev.protocol == "esp":
        if ev.encr_id is None:
            raise SaConfigError(f"child {ev.child!r}: ESP needs an encryption transform")
        attr, value = _encryption_attr(ev, encr_key)
        attrs.append((attr, value))
        if attr != "XFRMA_ALG_AEAD" and ev.integ_id:
            attrs.append(_integrity_attr(ev, integ_key))
        elif attr != "XFRMA_ALG_AEAD" and ev.encr_id == EncrId.NULL:
            raise SaConfigError(f"child {ev.child!r}: ESP with ENCR_NULL and no integrity protects nothing")
    else:
        if ev.encr_id:
            raise SaConfigError(f"child {ev.child!r}: AH has no encryption (got {transform_name(1, ev.encr_id)})")
        if not ev.integ_id:
            raise SaConfigError(f"child {ev.child!r}: AH needs an integrity transform")
        attrs.append(_integrity_attr(ev, integ_key))

    flags = 0
    # The legacy u8 window holds at most 32; beyond that (and with ESN) the
    # bitmap attribute is needed, and then the u8 must be 0.
    window = ev.replay_window if inbound else (1 if ev.esn else 0)
    if not 0 <= window <= XFRMA_REPLAY_ESN_MAX:
        raise SaConfigError(f"child {ev.child!r}: replay window {window} is outside 0..{XFRMA_REPLAY_ESN_MAX}")
    u8_window = 0
    if window and (ev.esn or window > LEGACY_REPLAY_MAX):
        attrs.append(("XFRMA_REPLAY_ESN_VAL", {"bmp_len": (window + 31) // 32, "replay_window": window}))
    else:
        u8_window = window
    if ev.esn:
        flags |= XFRM_STATE_ESN
    if mode == XFRM_MODE_TUNNEL:
        # the SA carries both inner families (IPv4 in IPv6 and back), like charon's
        flags |= XFRM_STATE_AF_UNSPEC
    if ev.protocol == "ah" and family == socket.AF_INET:
        # RFC 4302 §3.3.3.2.1: over IPv4 the AH header is padded to 32 bits.
        # Linux pads to 64 unless told (for ICVs like HMAC-SHA2-256-128 the
        # two differ), and charon and pluto tell it: without this flag no
        # AH packet passes between us and them.
        flags |= XFRM_STATE_ALIGN4

    if ev.encap:
        if ev.protocol != "esp":
            raise SaConfigError(f"child {ev.child!r}: UDP encapsulation is for ESP only (RFC 3948)")
        lport, rport = ev.local_port or NATT_PORT, ev.remote_port or NATT_PORT
        sport, dport = (rport, lport) if inbound else (lport, rport)
        attrs.append(("XFRMA_ENCAP", {"encap_type": UDP_ENCAP_ESPINUDP, "encap_sport": sport,
                                      "encap_dport": dport}))
        if inbound:
            # The kernel's own rate limit of XFRM_MSG_MAPPING (Linux 5.17+; older kernels ignore the
            # attribute): one per new source port, else one per MAPPING_HOLD, not one per packet.
            attrs.append(("XFRMA_MTIMER_THRESH", int(MAPPING_HOLD)))

    msg = xfrm_usersa_info()
    msg["sel"] = {"family": 0 if mode == XFRM_MODE_TUNNEL else family}
    msg["id"] = {"daddr": dst, "spi": spi, "proto": PROTOCOLS[ev.protocol]}
    msg["saddr"] = src
    soft_packets, hard_packets = _limit(ev.soft_packets), _limit(ev.hard_packets)
    if not inbound and not ev.esn:
        # RFC 4303 §3.3.3: a new SA before the 2^32nd packet. The kernel has no expire event for
        # that (it drops once oseq would wrap); the packet count, which oseq follows, has one.
        soft_packets, hard_packets = min(soft_packets, SEQ_SOFT_32), min(hard_packets, SEQ_MAX_32)
    msg["lft"] = {
        "soft_byte_limit": _limit(ev.soft_bytes),
        "hard_byte_limit": _limit(ev.hard_bytes),
        "soft_packet_limit": soft_packets,
        "hard_packet_limit": hard_packets,
    }
    msg["reqid"] = kreqid
    msg["family"] = family
    msg["mode"] = mode
    msg["replay_window"] = u8_window
    msg["flags"] = flags
    msg["attrs"] = attrs
    return msg


def sa_id(daddr: str, spi: int, proto: int, family: int) -> xfrm_usersa_id:
    """A DELSA / GETSA request for one SA."""
    msg = xfrm_usersa_id()
    msg["daddr"] = daddr
    msg["spi"] = spi
    msg["family"] = family
    msg["proto"] = proto
    return msg
