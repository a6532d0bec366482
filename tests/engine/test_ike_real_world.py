"""Issue 16 on the two-endpoint bench: what real-world peers (cloud gateways,
routers, rebooting peers) hit on day one."""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest

from engine.events import ChildSaInstalled, IkeState, NegotiationFailed
from engine.ike.endpoint import IkeEndpoint
from engine.ike.sa import IkeSa
from engine.policy.identity import parse_identity
from engine.policy.model import IkeSecret, Secrets
from engine.runtime.udp import UdpSockets
from engine.secret import Secret
from engine.wire.constants import FLAG_INITIATOR, FLAG_RESPONSE, NON_ESP_MARKER, ExchangeType, NotifyType
from engine.wire.message import decode_message, encode_message
from engine.wire.payloads import NotifyPayload

from tests.engine.ike_pair import LEFT, PSK, RIGHT, Pair, child, connection, ike_data, mirror, policy


def ip_secrets(psk: str = PSK) -> Secrets:
    """A secret named by the two addresses, as for a cloud gateway (no `id` anywhere)."""
    return Secrets(ike=(IkeSecret("cloud", (parse_identity(LEFT), parse_identity(RIGHT)), Secret(psk)),))


def ip_pair(**conn_kw) -> Pair:
    a = connection(local_id=None, remote_id=None, **conn_kw)
    pa = dataclasses.replace(policy(a, address=LEFT), secrets=ip_secrets())
    pb = dataclasses.replace(policy(mirror(a), address=RIGHT), secrets=ip_secrets())
    return Pair(pa, pb)


# ------------------------------------------------------------------ 1. PSK with IP-address identities
def test_psk_initiator_with_ip_identities_comes_up():
    p = ip_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert p.of("a", ChildSaInstalled) and p.of("b", ChildSaInstalled)
    (a,), (b,) = p.a.status(p.now), p.b.status(p.now)
    assert (a.local_id, a.remote_id) == (LEFT, RIGHT)
    assert (b.local_id, b.remote_id) == (RIGHT, LEFT)


def test_missing_psk_as_initiator_is_a_failure_not_a_stuck_sa():
    p = ip_pair()
    p.a.policy = dataclasses.replace(p.a.policy, secrets=Secrets(ike=(
        IkeSecret("other", (parse_identity("192.0.2.99"),), Secret(PSK)),)))
    sa = p.a.initiate("tun", p.now)
    p.advance(1)
    failed = p.of("a", NegotiationFailed)
    assert failed and "no pre-shared key" in failed[0].reason
    assert sa.state == IkeState.DESTROYED
    assert not p.a.status(p.now)


# ------------------------------------------------------------------ 2. INITIAL_CONTACT and unique
def reboot(p: Pair, side: str = "a", *, initial_contact: bool = True) -> IkeEndpoint:
    """``side`` loses all state (a crash: no DELETE) and comes back with the same policy."""
    old = p.ep(side)
    rnd = random.Random(99)
    new = IkeEndpoint(old.policy, rng=rnd.randbytes, seed=99)
    if not initial_contact:
        new.initial_contact = lambda sa: False  # a peer that does not send it (Libreswan re-initiating)
    setattr(p, side, new)
    return new


def up(p: Pair, side: str) -> list:
    return [sa for sa in p.ep(side).sas if sa.established]


def restart_pair(unique: str = "no", *, initial_contact: bool = True, first: str = "a") -> tuple[Pair, IkeSa]:
    a = connection(unique=unique)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.ep(first).initiate("tun", p.now)
    p.advance(1)
    (old,) = up(p, "b")
    a2 = reboot(p, "a", initial_contact=initial_contact)
    a2.initiate("tun", p.now)
    p.advance(1)
    return p, old


@pytest.mark.parametrize("first", ["a", "b"])
def test_initial_contact_as_responder_replaces_the_old_ike_sa(first):
    p, old = restart_pair(first=first)
    (new,) = up(p, "b")
    assert new is not old and old.state == IkeState.DESTROYED
    assert len(p.of("b", ChildSaInstalled)) == 2
    assert len([sa for sa in p.b.sas if sa.children]) == 1


def test_without_initial_contact_unique_no_keeps_both():
    p, old = restart_pair("no", initial_contact=False)
    assert len(up(p, "b")) == 2


def test_unique_never_ignores_initial_contact():
    p, old = restart_pair("never")
    assert len(up(p, "b")) == 2


def test_unique_replace_deletes_the_orphan_without_initial_contact():
    p, old = restart_pair("replace", initial_contact=False)
    # From the same address and port it looks like a reauthentication: charon (enforce_replace)
    # deletes the duplicate 10 s later, so the CHILD SAs of a real one overlap.
    assert old.state == IkeState.ESTABLISHED
    p.advance(10)
    new = [sa for sa in up(p, "b") if sa is not old]
    assert len(new) == 1 and old.state in (IkeState.DELETING, IkeState.DESTROYED)
    (new,) = new
    p.advance(200)  # the rebooted peer never answers the DELETE: gone after the retransmissions
    assert old.state == IkeState.DESTROYED
    assert up(p, "b") == [new] and new.state == IkeState.ESTABLISHED


# ------------------------------------------------------------------ 3. port rules (RFC 7296 §2.11)
def test_request_on_port_500_after_float_is_answered_from_500():
    """The peer, moved to a new address, sends a request to our IKE port after NAT-T had moved
    the SA to 4500: the answer goes from 500 to where the request came from, without the
    non-ESP marker, and the SA stays on its NAT-T ports."""
    a = connection(encap=True)
    p = Pair(policy(a, address=LEFT), policy(mirror(a), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    (sa_b,) = up(p, "b")
    assert sa_b.floated and sa_b.local[1] == 4500
    (sa_a,) = up(p, "a")
    sa_a.start(p.a.exchanges.dpd(sa_a), p.now)
    (request,) = p.a.datagrams_to_send()
    assert request.data.startswith(NON_ESP_MARKER)
    moved = ("192.0.2.3", 500)
    p.b.receive_datagram(request.data[len(NON_ESP_MARKER):], (RIGHT, 500), moved, p.now)
    (answer,) = p.b.datagrams_to_send()
    assert (answer.local, answer.remote) == ((RIGHT, 500), moved)
    assert not answer.data.startswith(NON_ESP_MARKER) and answer.data[17] == 0x20  # IKEv2 header
    assert (sa_b.local, sa_b.remote) == ((RIGHT, 4500), (LEFT, 4500))
    # a retransmission of that request gets the cached answer the same way
    p.b.receive_datagram(request.data[len(NON_ESP_MARKER):], (RIGHT, 500), moved, p.now)
    (again,) = p.b.datagrams_to_send()
    assert (again.local, again.remote, again.data) == ((RIGHT, 500), moved, answer.data)


# ------------------------------------------------------------------ 4. DPD only when idle
def dpd_pair() -> Pair:
    a = connection(dpd_delay=10.0)
    p = Pair(policy(a, address=LEFT), policy(mirror(a, dpd_delay=0.0), address=RIGHT))
    p.a.initiate("tun", p.now)
    p.advance(1)
    return p


def dpd_probes(p: Pair) -> int:
    """DPD requests a sent: INFORMATIONAL requests (exchange 37, no response flag) from a."""
    msgs = [ike_data(d.data) for side, d in p.log if side == "a"]
    return sum(1 for m in msgs if m is not None and m[18] == 37 and not m[19] & 0x20)


def test_dpd_probes_once_per_delay_when_idle():
    p = dpd_pair()
    p.advance(35)
    assert dpd_probes(p) == 3


def test_no_dpd_probe_while_esp_arrives():
    p = dpd_pair()
    (child,) = p.of("a", ChildSaInstalled)
    spi_in = child.spi_in  # the event carries it as an integer, as the datapath counters do
    for _ in range(35):  # one packet a second, reported as the runtime's counters loop does
        p.advance(1)
        p.a.child_activity([spi_in], p.now)
    assert dpd_probes(p) == 0
    p.advance(10.5)  # traffic stops: a probe after dpd_delay
    assert dpd_probes(p) == 1


def test_activity_of_unknown_spis_changes_nothing():
    p = dpd_pair()
    p.a.child_activity([12345], p.now + 5)
    p.advance(10.5)
    assert dpd_probes(p) == 1


# ------------------------------------------------------------------ 5. requests for IKE SAs we do not know
def stale(exchange=ExchangeType.INFORMATIONAL, flags=FLAG_INITIATOR, mid=7) -> bytes:
    """What a peer that still holds an IKE SA we lost sends (the SK payload is never read)."""
    return encode_message(exchange, mid, b"\x11" * 8, b"\x22" * 8, flags, [])


def test_unknown_spi_request_is_answered_invalid_ike_spi(caplog):
    p = Pair(policy(connection(), address=LEFT), policy(mirror(connection()), address=RIGHT))
    src = ("192.0.2.9", 4500)
    with caplog.at_level(logging.INFO, logger="engine.ike"):
        p.b.receive_datagram(stale(), (RIGHT, 4500), src, p.now)
    (out,) = p.b.datagrams_to_send()
    assert (out.local, out.remote) == ((RIGHT, 4500), src) and out.data.startswith(NON_ESP_MARKER)
    m = decode_message(out.data[len(NON_ESP_MARKER):])
    h = m.header
    assert (h.spi_i, h.spi_r, h.mid, h.exchange) == (b"\x11" * 8, b"\x22" * 8, 7, ExchangeType.INFORMATIONAL)
    assert h.response and not h.initiator
    assert [(type(x), x.type) for x in m.payloads] == [(NotifyPayload, NotifyType.INVALID_IKE_SPI)]
    assert p.b.stats["unknown_spi"] == 1 and p.b.stats["invalid_spi_sent"] == 1
    assert "unknown IKE SAs" in caplog.text


def test_unknown_spi_response_is_never_answered():
    p = Pair(policy(connection(), address=LEFT), policy(mirror(connection()), address=RIGHT))
    p.b.receive_datagram(stale(flags=FLAG_RESPONSE), (RIGHT, 500), ("192.0.2.9", 500), p.now)
    assert not p.b.datagrams_to_send() and p.b.stats["unknown_spi"] == 1


def test_unknown_spi_answers_and_log_lines_are_bounded(caplog):
    p = Pair(policy(connection(), address=LEFT), policy(mirror(connection()), address=RIGHT))
    with caplog.at_level(logging.INFO, logger="engine.ike"):
        for i in range(1000):
            p.b.receive_datagram(stale(mid=i), (RIGHT, 500), ("192.0.2.9", 500), p.now + i * 0.001)
    sent = len(p.b.datagrams_to_send())
    assert 20 <= sent <= 40 and p.b.stats["unknown_spi"] == 1000
    assert len([r for r in caplog.records if "unknown IKE SAs" in r.getMessage()]) == 1


# ------------------------------------------------------------------ our address unknown (a laptop)
def test_dynamic_selector_takes_the_address_we_actually_use():
    """No local_addrs and no listen: we initiate from 0.0.0.0 (the kernel picks the source); the
    peer's answer arrives on our real address, which `dynamic` and our ID then use."""
    a = connection(local_id=None, children=(child(local_ts="dynamic", remote_ts="198.51.100.0/25"),))
    a = dataclasses.replace(a, local_addrs=())
    b = mirror(a, remote_addrs=("192.0.2.0/24",))
    pa = dataclasses.replace(policy(a), engine=dataclasses.replace(policy(a).engine, listen=()))
    pb = dataclasses.replace(policy(b, address=RIGHT), secrets=Secrets(ike=(IkeSecret("all", (), Secret(PSK)),)))
    p = Pair(pa, pb)
    send = p.a.send

    def kernel_source(data, local, remote):  # what the kernel does for a wildcard socket
        send(data, (LEFT, local[1]) if local[0] == "0.0.0.0" else local, remote)
    p.a.send = p.a.transmit = kernel_source
    sa = p.a.initiate("tun", p.now)
    assert sa.local[0] == "0.0.0.0"
    p.advance(1)
    (installed,) = p.of("a", ChildSaInstalled)
    assert [str(t) for t in installed.local_ts] == [f"{LEFT}/32"]
    # IKE on the NAT-T port: with MOBIKE it floats there after IKE_SA_INIT (RFC 4555 §3.3)
    assert installed.local_addr == LEFT and sa.local == (LEFT, 4500)
    assert p.b.status(p.now)[0].remote_id == LEFT


def test_route_lookup_gives_the_source_address_before_the_first_answer():
    """With the runtime's route lookup injected, the SA starts from our real address: NAT
    detection hashes it, so no NAT is seen where there is none."""
    a = connection(local_id=None, children=(child(local_ts="dynamic", remote_ts="198.51.100.0/25"),))
    a = dataclasses.replace(a, local_addrs=())
    b = mirror(a, remote_addrs=("192.0.2.0/24",))
    pa = dataclasses.replace(policy(a), engine=dataclasses.replace(policy(a).engine, listen=()))
    p = Pair(pa, policy(b, address=RIGHT))
    asked = []
    p.a.source_address = lambda remote: asked.append(remote) or LEFT
    sa = p.a.initiate("tun", p.now)
    assert asked == [RIGHT] and sa.local == (LEFT, 500)
    p.advance(1)
    (installed,) = p.of("a", ChildSaInstalled)
    assert [str(t) for t in installed.local_ts] == [f"{LEFT}/32"]
    # (IKE floats to port 4500 anyway with MOBIKE, RFC 4555 §3.3; ESP stays bare without a NAT)
    assert not sa.nat.any and not installed.encap


def test_runtime_route_lookup_on_loopback():
    assert UdpSockets(lambda *a: None).source_for("127.0.0.1") == "127.0.0.1"
