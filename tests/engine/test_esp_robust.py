"""Hostile input: whatever bytes arrive, unprotect either delivers an
authentic packet or raises EspDrop with a known reason, never anything else."""

from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import IP, UDP, IPv6, Raw, raw
from scapy.layers.inet6 import IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop

from engine.crypto.encr import encr_keymat_size, make_cipher
from engine.crypto.integ import Integ, integ_key_size
from engine.crypto.transforms import EncrId, IntegId
from engine.esp import DROP_REASONS, AhInboundSa, AhOutboundSa, EspDrop, EspInboundSa, EspOutboundSa
from engine.esp import ip as ipmod

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _sas(kind: str, version: int, mode: str):
    a, b = ("192.0.2.1", "192.0.2.2") if version == 4 else ("2001:db8::1", "2001:db8::2")
    kw = dict(mode=mode)
    if kind == "ah":
        key = os.urandom(integ_key_size(IntegId.HMAC_SHA2_256_128))
        out = AhOutboundSa(7, integ=Integ(IntegId.HMAC_SHA2_256_128, key), local_addr=a, remote_addr=b, **kw)
        inb = AhInboundSa(7, integ=Integ(IntegId.HMAC_SHA2_256_128, key), local_addr=b, remote_addr=a, **kw)
        return out, inb
    encr, bits, integ = {"gcm": (EncrId.AES_GCM_16, 128, None),
                         "cbc": (EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128)}[kind]
    ek = os.urandom(encr_keymat_size(encr, bits))
    ik = os.urandom(integ_key_size(integ)) if integ else b""
    mk = lambda cls, l, r: cls(7, cipher=make_cipher(encr, bits, ek), integ=Integ(integ, ik) if integ else None,  # noqa: E731
                                local_addr=l, remote_addr=r, encap=mode == "transport", **kw)
    return mk(EspOutboundSa, a, b), mk(EspInboundSa, b, a)


CASES = [(k, v, m) for k in ("gcm", "cbc", "ah") for v in (4, 6) for m in ("tunnel", "transport")]


@functools.lru_cache(maxsize=None)
def _sample(version: int, mode: str) -> bytes:
    if mode == "transport":
        src, dst = ("192.0.2.1", "192.0.2.2") if version == 4 else ("2001:db8::1", "2001:db8::2")
    else:
        src, dst = ("198.51.100.1", "198.51.100.129") if version == 4 else ("2001:db8:1::1", "2001:db8:2::1")
    if version == 4:
        return raw(IP(src=src, dst=dst) / UDP(dport=53) / Raw(b"abc" * 7))
    return raw(IPv6(src=src, dst=dst) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(dport=53) / Raw(b"abc"))


def _try(inb, data: bytes):
    try:
        return inb.unprotect(data, 0.0)
    except EspDrop as exc:
        assert exc.reason in DROP_REASONS
        return exc


@pytest.mark.parametrize("kind,version,mode", CASES, ids=[f"{k}-v{v}-{m}" for k, v, m in CASES])
@FUZZ
@given(data=st.data())
def test_mutated_packets_never_escape_as_exceptions(kind, version, mode, data):
    out, inb = _sas(kind, version, mode)
    good = out.protect(_sample(version, mode), 0.0)
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(good) + 8), st.integers(0, 255)), max_size=6))
    cut = data.draw(st.integers(0, len(good) + 8))
    buf = bytearray(good) + bytes(8)
    for pos, val in edits:
        buf[pos % len(buf)] = val
    mutated = bytes(buf[:cut])
    result = _try(inb, mutated)
    if not isinstance(result, EspDrop) and result is not None:
        # Delivered: only possible when the authenticated part is unchanged.
        assert ipmod.packet_length(result) == len(result)


@pytest.mark.parametrize("kind,version,mode", CASES, ids=[f"{k}-v{v}-{m}" for k, v, m in CASES])
@FUZZ
@given(blob=st.binary(max_size=200))
def test_random_bytes_are_dropped(kind, version, mode, blob):
    _, inb = _sas(kind, version, mode)
    assert isinstance(_try(inb, blob), EspDrop)
    assert inb.packets == 0
