"""An IKE_SA_INIT request's header is decoded once: the endpoint routes on it and hands it to the
front door, whose decode_message takes it instead of decoding it again; the message is the same."""

from __future__ import annotations

import engine.wire.message as message
from engine.events import IkeState
from engine.wire.message import decode_header, decode_message
from tests.engine.ike_pair import Pair, connection, mirror, policy


def test_decode_message_with_the_header_given_equals_without():
    conn = connection()
    pair = Pair(policy(conn), policy(mirror(conn)))
    pair.a.initiate("tun", pair.now)
    data = pair.a.datagrams_to_send()[0].data
    assert decode_message(data, header=decode_header(data)) == decode_message(data)


def test_an_init_request_header_is_decoded_once(monkeypatch):
    conn = connection()
    pair = Pair(policy(conn), policy(mirror(conn)))
    calls = []
    real = message.decode_header

    def counting(data):
        calls.append(bytes(data[:28]))
        return real(data)
    monkeypatch.setattr(message, "decode_header", counting)
    sa = pair.a.initiate("tun", pair.now)
    pair.deliver()
    assert sa.state == IkeState.ESTABLISHED
    # decode_message's own decode_header: never for the responder's IKE_SA_INIT request (MID 0,
    # exchange 34, no Response flag), which the endpoint decoded already.
    init_requests = [h for h in calls if h[18] == 34 and not h[19] & 0x20]
    assert init_requests == []
