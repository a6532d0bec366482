"""The switch to the NAT-T port at IKE_AUTH (RFC 7296 §2.23) is not a move of the peer:
it is logged at DEBUG; a real change of the peer's address or NAT mapping stays at INFO."""

from __future__ import annotations

import logging

from engine.wire.constants import NON_ESP_MARKER

from tests.engine.ike_pair import LEFT, RIGHT, Pair, connection, mirror, policy


def floated_pair(caplog) -> Pair:
    a = connection(encap=True, mobike=False)  # a MOBIKE SA moves only by UPDATE_SA_ADDRESSES (RFC 4555 §3.8)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    with caplog.at_level(logging.DEBUG, logger="engine"):
        p.a.initiate("tun", p.now)
        p.advance(1)
    return p


def moved_lines(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and "moved" in r.getMessage()]


def test_the_nat_t_port_float_is_not_an_info_move(caplog):
    p = floated_pair(caplog)
    (sa_b,) = [sa for sa in p.b.sas if sa.established]
    assert sa_b.floated and sa_b.remote == (LEFT, 4500)
    assert moved_lines(caplog, logging.INFO) == []
    floats = [r for r in caplog.records if r.levelno == logging.DEBUG and "NAT-T port" in r.getMessage()]
    assert len(floats) == 1 and "500 -> " in floats[0].getMessage()


def test_a_new_address_on_the_nat_t_port_is_still_an_info_move(caplog):
    p = floated_pair(caplog)
    (sa_a,) = [sa for sa in p.a.sas if sa.established]
    (sa_b,) = [sa for sa in p.b.sas if sa.established]
    caplog.clear()
    sa_a.start(p.a.exchanges.dpd(sa_a), p.now)
    (request,) = p.a.datagrams_to_send()
    assert request.data.startswith(NON_ESP_MARKER)
    with caplog.at_level(logging.DEBUG, logger="engine"):
        p.b.receive_datagram(request.data[len(NON_ESP_MARKER):], (RIGHT, 4500), ("192.0.2.3", 4500), p.now)
    assert sa_b.remote == ("192.0.2.3", 4500)
    (line,) = moved_lines(caplog, logging.INFO)
    assert "peer moved" in line and "192.0.2.3" in line
