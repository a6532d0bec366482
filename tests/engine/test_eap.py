"""EAP packets, EAP-Identity and EAP-MSCHAPv2: our server and our peer against each other,
the RFC 2759 vectors on the wire, and what a hostile or confused peer gets."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import eap
from engine.crypto import mschapv2 as ms
from engine.eap import packet as pk
from engine.eap.mschapv2 import MschapV2Peer, MschapV2Server
from engine.eap.session import EapPeer, EapServer
from engine.secret import Secret
from engine.wire.codec import decode_eap
from engine.wire.constants import EapCode
from engine.wire.payloads import EapPayload

H = bytes.fromhex
USERS = {b"alice": Secret("correct horse"), b"User": Secret("clientPass"), b"EXAMPLE\\bob": Secret("hunter2!")}


def fixed(*chunks: bytes):
    """A random source returning these bytes in turn (then zeros)."""
    it = iter(chunks)
    return lambda n: next(it, bytes(n))[:n].ljust(n, b"\0")


def converse(server: EapServer, peer: EapPeer, limit: int = 100):
    """Run both sides through the wire form (EAP payload bytes) until one ends; the trail of packets."""
    trail = []
    step = server.start()
    for _ in range(limit):
        trail.append(step.packet)
        raw = pk.decode(step.packet.encode())
        pstep = peer.receive(raw.to_payload())
        if pstep.state != "continue" or pstep.packet is None:
            if pstep.packet is not None:  # a failing peer still tells the server (MS-CHAPv2 Failure response)
                trail.append(pstep.packet)
                step = server.receive(pstep.packet.encode())
            return trail, step, pstep
        trail.append(pstep.packet)
        step = server.receive(pstep.packet.encode())
        if step.state != "continue":
            trail.append(step.packet)
            return trail, step, peer.receive(step.payload)
    raise AssertionError("no end")


def mschap_pair(name: bytes, password: str | None, *, ask_identity=True, server_random=None, peer_random=None,
                accept=lambda _: True):
    server = EapServer((26,), eap.server_methods(passwords=USERS.get, random=server_random or (lambda n: bytes(range(n)))),
                       ask_identity=ask_identity, ike_identity=b"ike-id", accept_identity=accept)
    peer = EapPeer(name, (26,), eap.peer_methods(name, password=Secret(password) if password else None,
                                                 random=peer_random or (lambda n: b"\x42" * n)))
    return server, peer


# -- packets -------------------------------------------------------------------------------------

def test_packet_round_trip_and_ike_payload():
    p = pk.EapPacket(EapCode.REQUEST, 7, 26, b"\x01\x07\x00\x05x")
    assert pk.decode(p.encode()) == p
    body = p.to_payload()
    assert body == EapPayload(1, 7, b"\x1a\x01\x07\x00\x05x")
    assert pk.from_payload(body) == p
    assert pk.decode(pk.success(9).encode()) == pk.EapPacket(EapCode.SUCCESS, 9)


@pytest.mark.parametrize("raw, words", [
    (b"\x01\x01\x00", "shorter than its 4-byte header"),
    (b"\x01\x01\x00\x09\x01", "length field says 9"),
    (b"\x01\x01\x00\x04", "without a type"),
    (b"\x03\x01\x00\x05\x00", "with 1 bytes of data"),
    (b"\x09\x01\x00\x04", "unknown EAP code 9"),
])
def test_malformed_packets_are_named(raw, words):
    with pytest.raises(pk.EapError, match=words):
        pk.decode(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_decode_raises_only_eap_error(raw):
    try:
        pk.decode(raw)
    except pk.EapError:
        pass


def test_nak_lists_only_method_types():
    assert pk.nak(3, (26, 13, 1)).type_data == bytes((26, 13))
    assert pk.nak(3, ()).type_data == b"\0"
    assert pk.nak_types(pk.nak(3, ())) == ()


# -- MS-CHAPv2 on the wire: the RFC 2759 §9.2 values ----------------------------------------------

def test_mschapv2_response_carries_the_rfc2759_nt_response_and_msk_matches():
    auth_challenge = H("5B5D7C7D7B3F2F3E3C2C602132262628")
    peer_challenge = H("21402324255E262A28295F2B3A337C7E")
    server, peer = mschap_pair(b"User", "clientPass", ask_identity=False,
                               server_random=fixed(auth_challenge), peer_random=fixed(peer_challenge))
    trail, end, pend = converse(server, peer)
    challenge, response, success_req, success_ack, eap_success = trail
    assert challenge.type_data[:4] == bytes((1, challenge.identifier)) + (len(challenge.type_data)).to_bytes(2, "big")
    assert challenge.type_data[5:21] == auth_challenge and challenge.type_data[21:] == b"ipsec-console"
    assert response.type_data[0] == 2 and response.type_data[4] == 49
    assert response.type_data[5:21] == peer_challenge
    assert response.type_data[29:53] == H("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
    assert response.type_data[54:] == b"User"
    assert success_req.type_data[4:46] == b"S=407A5589115FD0D6209F510FE9C04566932CDA56"
    assert success_ack.type_data == b"\x03"
    assert eap_success.code == EapCode.SUCCESS and eap_success.identifier == success_ack.identifier
    assert (end.state, pend.state) == ("success", "success")
    want = ms.msk(H("44EBBA8D5312B8D611474411F56989AE"), H("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF"))
    assert server.msk == peer.msk == Secret(want)
    assert server.identity == b"User"


def test_identity_first_then_mschapv2_and_identifiers_increase():
    server, peer = mschap_pair(b"alice", "correct horse")
    trail, end, pend = converse(server, peer)
    assert trail[0].type == 1 and trail[1].type_data == b"alice"
    requests = [p for p in trail if p.code == EapCode.REQUEST]
    ids = [p.identifier for p in requests]
    assert all((b - a) % 256 == 1 for a, b in itertools.pairwise(ids))
    assert (end.state, pend.state) == ("success", "success")
    assert server.identity == b"alice" and len(server.msk) == 64 and server.msk == peer.msk


def test_domain_user_names_hash_the_user_part_and_are_looked_up_whole():
    server, peer = mschap_pair(b"EXAMPLE\\bob", "hunter2!")
    _, end, pend = converse(server, peer)
    assert (end.state, pend.state) == ("success", "success")
    assert server.identity == b"EXAMPLE\\bob"


def test_wrong_password_retries_with_a_new_challenge_then_fails_in_plain_words():
    server, peer = mschap_pair(b"alice", "wrong")
    trail, end, pend = converse(server, peer)
    failure_req = next(p for p in trail if p.code == EapCode.REQUEST and p.type == 26 and p.type_data[0] == 4)
    assert b"E=691 R=1 C=" in failure_req.type_data
    assert pend.state == "failure" and "wrong user name or password (E=691)" in pend.reason
    assert end.state == "failure" and "ended EAP-MSCHAPv2" in end.reason
    assert server.msk is None and peer.msk is None


def test_server_gives_up_after_its_retries():
    server = MschapV2Server(USERS.get, max_retries=2, random=lambda n: b"\x11" * n)
    req = server.start(5)
    bad = MschapV2Peer(b"alice", Secret("nope"), random=lambda n: b"\x22" * n)
    steps = []
    resp = bad.process(req).packet
    for i in range(3):
        step = server.process(resp, 6 + i)
        steps.append(step)
        if step.outcome is not eap.Outcome.CONTINUE:
            break
        # A fresh peer answers each retry challenge (as a user retyping the password would).
        retry = step.packet
        challenge = pk.EapPacket(EapCode.REQUEST, retry.identifier, 26,
                                 bytes((1, retry.type_data[1])) + b"\0\0" + b"\x10" + bytes.fromhex(
                                     retry.type_data.split(b"C=")[1][:32].decode()) + b"gw")
        resp = MschapV2Peer(b"alice", Secret("nope"), random=lambda n: b"\x22" * n).process(challenge).packet
    assert [s.outcome for s in steps] == [eap.Outcome.CONTINUE, eap.Outcome.CONTINUE, eap.Outcome.FAILURE]
    assert steps[0].delay == 2.0
    assert "wrong password (3 tries)" in steps[-1].reason


def test_unknown_user_gets_the_same_answer_as_a_wrong_password():
    server = MschapV2Server(USERS.get, random=lambda n: b"\x11" * n)
    req = server.start(5)
    unknown = MschapV2Peer(b"mallory", Secret("x"), random=lambda n: b"\x22" * n).process(req).packet
    wrong = MschapV2Peer(b"alice", Secret("x"), random=lambda n: b"\x22" * n).process(req).packet
    a = server.process(unknown, 6)
    server2 = MschapV2Server(USERS.get, random=lambda n: b"\x11" * n)
    server2.start(5)
    b = server2.process(wrong, 6)
    assert a.packet.encode() == b.packet.encode()


def test_fake_gateway_without_the_password_is_detected_by_the_peer():
    peer = EapPeer(b"alice", (26,), eap.peer_methods(b"alice", password=Secret("correct horse")))
    rogue = MschapV2Server(lambda name: Secret("a guess"), random=lambda n: b"\x33" * n)
    step = peer.receive(rogue.start(1))
    # The rogue cannot make the authenticator response; it sends a made-up one.
    forged = pk.EapPacket(EapCode.REQUEST, 2, 26, b"\x03\x01\x00\x2e" + b"S=" + b"0" * 40 + b" M=hi")
    step = peer.receive(forged)
    assert step.state == "failure" and "fake gateway" in step.reason
    assert peer.receive(pk.success(3)).state == "failure"


def test_peer_refuses_success_before_the_method_finished():
    peer = EapPeer(b"alice", (26,), eap.peer_methods(b"alice", password=Secret("correct horse")))
    step = peer.receive(pk.identity_request(1))
    assert step.packet.type_data == b"alice"
    step = peer.receive(pk.success(2))
    assert step.state == "failure" and "EAP-Success before EAP finished" in step.reason
    assert peer.msk is None


def test_peer_naks_a_method_it_is_not_configured_for():
    peer = EapPeer(b"alice", (26,), eap.peer_methods(b"alice", password=Secret("x")))
    step = peer.receive(pk.EapPacket(EapCode.REQUEST, 4, 13, b"\x20"))
    assert step.packet.type == 3 and step.packet.type_data == bytes((26,))
    step = peer.receive(pk.failure(5))
    assert step.state == "failure" and "asked for EAP-TLS" in step.reason


def test_server_switches_method_on_nak_when_allowed_and_fails_otherwise():
    server = EapServer((13, 26), lambda t: MschapV2Server(USERS.get) if t == 26 else _StubTls(),
                       ask_identity=False)
    first = server.start()
    assert first.packet.type == 13
    step = server.receive(pk.nak(first.packet.identifier, (26,)))
    assert step.state == "continue" and step.packet.type == 26
    only = EapServer((26,), eap.server_methods(passwords=USERS.get), ask_identity=False)
    first = only.start()
    step = only.receive(pk.nak(first.packet.identifier, (13,)))
    assert step.state == "failure" and "wants EAP-TLS" in step.reason and step.packet.code == EapCode.FAILURE


class _StubTls(eap.ServerMethod):
    type = 13
    name = "EAP-TLS"

    def start(self, identifier):
        return pk.EapPacket(EapCode.REQUEST, identifier, 13, b"\x20")


def test_server_checks_identifier_code_and_identity():
    server, peer = mschap_pair(b"alice", "correct horse", accept=lambda name: name.startswith(b"al"))
    first = server.start()
    step = server.receive(pk.identity_response((first.packet.identifier + 7) & 0xFF, b"alice"))
    assert step.state == "failure" and "identifier" in step.reason
    server, peer = mschap_pair(b"bob", "x", accept=lambda name: name.startswith(b"al"))
    first = server.start()
    step = server.receive(pk.identity_response(first.packet.identifier, b"bob"))
    assert step.state == "failure" and "'bob' is not allowed" in step.reason
    server, _ = mschap_pair(b"alice", "x")
    first = server.start()
    step = server.receive(pk.EapPacket(EapCode.REQUEST, first.packet.identifier, 1))
    assert step.state == "failure" and "expected a response" in step.reason
    assert server.receive(pk.identity_response(1, b"x")).state == "failure"


def test_server_without_identity_round_uses_the_ike_identity():
    server = EapServer((26,), eap.server_methods(passwords=USERS.get), ask_identity=False, ike_identity=b"alice")
    assert server.identity == b"alice"
    assert server.start().packet.type == 26


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=6))
def test_garbage_never_raises_from_either_side(messages):
    server, _ = mschap_pair(b"alice", "x")
    server.start()
    peer = EapPeer(b"alice", (26, 13), eap.peer_methods(b"alice", password=Secret("x")))
    for m in messages:
        for side in (server, peer):
            step = side.receive(m)
            assert step.state in ("continue", "success", "failure")
            if step.state == "success":
                pytest.fail("garbage authenticated")


def test_rounds_are_bounded():
    peer = EapPeer(b"alice", (26,), eap.peer_methods(b"alice", password=Secret("x")))
    for i in range(200):
        step = peer.receive(pk.EapPacket(EapCode.REQUEST, i & 0xFF, 2, b"notice"))
        if step.state == "failure":
            break
    assert step.state == "failure" and "rounds" in step.reason


def test_eap_payload_from_the_wire_codec_feeds_the_session():
    server, peer = mschap_pair(b"alice", "correct horse")
    first = server.start()
    decoded = decode_eap(48, first.packet.encode(), False, 0)  # the payload body is the EAP packet
    assert decoded == first.payload
    assert peer.receive(decoded).packet.type_data == b"alice"
