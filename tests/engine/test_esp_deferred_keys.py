"""ESP SAs installed from a ChildSaInstalled key their cipher (and MAC) on their first packet:
a pair installed and deleted unused (a handshake benchmark, a gateway's idle road warriors) never
builds a cipher context; once keyed, each direction works as an SA keyed at once, sequence
numbers (the AEAD nonces) included, and nothing shows a key."""

from __future__ import annotations

import gc

import pytest
from scapy.all import ICMP, IP, raw

import engine.crypto.encr as encr
from engine.crypto.encr import Cipher
from engine.crypto.integ import Integ
from engine.crypto.transforms import EncrId, IntegId
from engine.esp import EspDrop, EspInboundSa, EspOutboundSa, Sad, sa_pair_from_event
from engine.esp.sa import SEQ_SOFT_32
from engine.events import ChildSaInstalled
from engine.policy.ts import parse_ts

from tests.engine.test_esp_sad import PING, PING_BACK, events

TRANSFORMS = [(EncrId.AES_GCM_16, 256, None), (EncrId.CHACHA20_POLY1305, None, None),
              (EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128), (EncrId.NULL, None, IntegId.HMAC_SHA2_256_128)]


def _contexts(sa) -> list:
    """Keyed cipher and MAC objects the SA holds (its slots and one level below)."""
    found, todo, seen = [], [(sa, 0)], set()
    while todo:
        o, depth = todo.pop()
        if id(o) in seen or depth > 2:
            continue
        seen.add(id(o))
        if isinstance(o, (Cipher, Integ)):
            found.append(o)
            continue
        for cls in type(o).__mro__:
            for name in getattr(cls, "__slots__", ()):
                todo.append((getattr(o, name, None), depth + 1))
    return found


@pytest.fixture
def keyed(monkeypatch):
    """Counts the AES-GCM contexts keyed with a real (non-zero) key."""
    made = []
    real = encr.AESGCM

    def counting(key):
        if any(key):
            made.append(len(key))
        return real(key)
    monkeypatch.setattr(encr, "AESGCM", counting)
    return made


@pytest.mark.parametrize("encr_id,bits,integ", TRANSFORMS)
def test_an_unused_pair_holds_no_cipher_and_each_direction_keys_on_its_first_packet(encr_id, bits, integ):
    ev_a, ev_b = events(encr_id, bits, integ)
    in_a, out_a = sa_pair_from_event(ev_a)
    in_b, out_b = sa_pair_from_event(ev_b)
    for sa in (in_a, out_a, in_b, out_b):
        assert _contexts(sa) == [], sa
    wire = out_a.protect(PING, 0.0)
    assert len(_contexts(out_a)) == (2 if integ else 1)
    assert _contexts(in_b) == []  # nothing received yet
    assert in_b.unprotect(wire, 0.0) == PING
    assert len(_contexts(in_b)) == (2 if integ else 1)
    assert _contexts(in_a) == [] and _contexts(out_b) == []
    # the other direction, then more packets both ways on the keyed SAs
    assert in_a.unprotect(out_b.protect(PING_BACK, 0.0), 0.0) == PING_BACK
    for _ in range(3):
        assert in_b.unprotect(out_a.protect(PING, 1.0), 1.0) == PING
        assert in_a.unprotect(out_b.protect(PING_BACK, 1.0), 1.0) == PING_BACK
    assert (out_a.seq, in_b.packets, out_b.seq, in_a.packets) == (4, 4, 4, 4)
    assert type(in_a) is EspInboundSa and type(in_b) is EspInboundSa


def test_a_pair_installed_and_removed_unused_never_keys_a_cipher(keyed):
    sad = Sad()
    for n in range(20):
        ev, _ = events(spis=(0x1000 + n, 0x2000 + n))
        sad.install_event(ev)
        sad.remove(ev.spi_in)
    assert keyed == []
    ev_a, ev_b = events()
    in_a, out_a = sa_pair_from_event(ev_a)
    in_b, _out_b = sa_pair_from_event(ev_b)
    in_b.unprotect(out_a.protect(PING, 0.0), 0.0)
    assert keyed == [32, 32]  # one context per direction that carried a packet


def test_replayed_and_forged_packets_are_still_refused_after_deferred_keying():
    ev_a, ev_b = events()
    _in_a, out_a = sa_pair_from_event(ev_a)
    in_b, _out_b = sa_pair_from_event(ev_b)
    forged = bytearray(out_a.protect(PING, 0.0))
    good = out_a.protect(PING, 0.0)
    forged[-1] ^= 1
    with pytest.raises(EspDrop) as exc:
        in_b.unprotect(bytes(forged), 0.0)  # the first packet keys the SA, and fails its tag
    assert exc.value.reason == "icv" and in_b.window.top == 0
    assert in_b.unprotect(good, 0.0) == PING
    with pytest.raises(EspDrop) as exc:
        in_b.unprotect(good, 0.0)
    assert exc.value.reason == "replay"


def test_sequence_numbers_continue_after_start_at_on_an_unkeyed_sa():
    ev_a, ev_b = events()
    _in_a, out_a = sa_pair_from_event(ev_a)
    in_b, _out_b = sa_pair_from_event(ev_b)
    out_a.start_at(41)
    wire = out_a.protect(PING, 0.0)
    assert int.from_bytes(wire[4:8], "big") == 42 and wire[8:16] == (42).to_bytes(8, "big")  # seq, IV
    assert in_b.unprotect(wire, 0.0) == PING
    # near the last numbers: the soft rekey request still comes from the slow path
    _in_c, out_c = sa_pair_from_event(ev_a)
    out_c.start_at(SEQ_SOFT_32 - 1)
    out_c.protect(PING, 0.0)
    assert [e.reason for e in out_c.events] == ["sequence numbers running out"]


def test_after_its_first_packet_the_outbound_sa_is_back_on_the_fast_path(monkeypatch):
    calls = []
    real = EspOutboundSa._next_seq
    monkeypatch.setattr(EspOutboundSa, "_next_seq", lambda self, seq: (calls.append(seq), real(self, seq)))
    ev_a, _ = events()
    for first in ("packet", "cipher"):
        calls.clear()
        _in, out = sa_pair_from_event(ev_a)
        if first == "cipher":
            assert out.cipher is not None  # keyed by asking for the cipher, not by a packet
        for _ in range(5):
            out.protect(PING, 0.0)
        assert calls == ([1] if first == "packet" else []), first


def test_deferred_sas_show_no_key_and_make_no_reference_cycle():
    ev_a, ev_b = events(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128)
    secrets = [k.reveal().hex() for k in (ev_a.keys.encr_in, ev_a.keys.encr_out, ev_a.keys.integ_in,
                                          ev_a.keys.integ_out)]
    gc.collect()
    in_a, out_a = sa_pair_from_event(ev_a)
    in_b, out_b = sa_pair_from_event(ev_b)
    text = " ".join(repr(x) for x in (in_a, out_a, in_a._keys, out_a._keys))
    assert not any(s in text for s in secrets)
    in_b.unprotect(out_a.protect(PING, 0.0), 0.0)
    del in_a, out_a, in_b, out_b
    assert gc.collect() == 0


def test_pairs_sharing_compiled_selectors_keep_their_own_checks_and_counters():
    """Selectors compiled once are shared by pairs that name the same ones; a pair with other
    selectors over the same addresses gets its own check."""
    ev_a, ev_b = events()
    narrow = ChildSaInstalled(**{**{f: getattr(ev_b, f) for f in ev_b.__dataclass_fields__},
                                 "remote_ts": (parse_ts("198.51.100.0/26"),)})
    _in_a, out_a = sa_pair_from_event(ev_a)
    in_b, _ = sa_pair_from_event(ev_b)
    in_b2, _ = sa_pair_from_event(ev_b)
    in_n, _ = sa_pair_from_event(narrow)
    assert in_b.remote_ts is in_b2.remote_ts and in_n.remote_ts != in_b.remote_ts
    for sa in (in_b, in_b2):
        assert sa.unprotect(out_a.protect(PING, 0.0), 0.0) == PING  # 198.51.100.1 is in /25 and /26
    far = raw(IP(src="198.51.100.100", dst="198.51.100.129") / ICMP())
    assert in_b.unprotect(out_a.protect(far, 0.0), 0.0) == far
    with pytest.raises(EspDrop) as exc:
        in_n.unprotect(out_a.protect(far, 0.0), 0.0)  # .100 is outside the /26
    assert exc.value.reason == "policy_mismatch"
    assert (in_b.packets, in_b2.packets, in_n.packets, in_n.dropped) == (2, 1, 0, 1)
