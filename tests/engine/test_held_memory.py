"""What an established IKE SA keeps while it sits idle (a gateway holds thousands): no keyed
cipher or MAC contexts (cryptography's AEAD objects hold ~2.4 KB of C memory each; SK contexts
are keyed per message), no IKE_SA_INIT bytes once AUTH is done, no empty per-SA containers that
a shared constant can stand for. benchmarks/handshakes.py --hold measures the resident total."""

from __future__ import annotations

from engine.crypto.encr import Cipher
from engine.crypto.integ import Integ

from tests.engine.ike_pair import Pair, child, connection, mirror, policy, LEFT, RIGHT


def _established_pair(**kw):
    conn = connection(children=(child(),), **kw)
    p = Pair(policy(conn, address=LEFT), policy(mirror(conn), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def _reachable(obj, depth=4):
    seen, todo = set(), [(obj, 0)]
    while todo:
        o, d = todo.pop()
        if id(o) in seen or d > depth:
            continue
        seen.add(id(o))
        yield o
        slots = [getattr(o, s, None) for c in type(o).__mro__ for s in getattr(c, "__slots__", ())]
        for v in [*getattr(o, "__dict__", {}).values(), *slots]:
            todo.append((v, d + 1))


def test_an_idle_ike_sa_keeps_keys_but_no_cipher_contexts():
    p = _established_pair(ike=("aes256gcm16-prfsha256-x25519", "aes256-sha256-prfsha256-x25519"))
    for ep in (p.a, p.b):
        sa = ep.sas[0]
        held = [type(o).__name__ for o in _reachable(sa.sk) if isinstance(o, (Cipher, Integ))]
        assert not held, held
    # ...and they are keyed again for the next message: a DPD round trip still works
    p.a.sas[0].start(p.a.exchanges.dpd(p.a.sas[0]), p.now)
    p.advance(1)
    assert p.a.sas[0].established and p.a.sas[0].mid_out == 3


def test_cbc_and_hmac_sk_contexts_are_not_kept_either():
    p = _established_pair(ike=("aes256-sha256-prfsha256-x25519",))
    sa = p.b.sas[0]
    assert not [o for o in _reachable(sa.sk) if isinstance(o, (Cipher, Integ))]
    sa.start(p.b.exchanges.dpd(sa), p.now)
    p.advance(1)
    assert sa.established and sa.mid_out == 1


def test_an_established_sa_drops_what_only_authentication_needed():
    p = _established_pair()
    for ep in (p.a, p.b):
        sa = ep.sas[0]
        assert sa.init_request == b"" and sa.init_response == b""
        assert type(sa.queue) is list
    # one shared empty set for peers that sent no SIGNATURE_HASH_ALGORITHMS, not one per SA
    assert not p.a.sas[0].peer_hash_algorithms and p.a.sas[0].peer_hash_algorithms is p.b.sas[0].peer_hash_algorithms
