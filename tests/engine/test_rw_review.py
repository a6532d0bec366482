"""Review of the road-warrior server (rw14), each case a bug found against the RFCs and charon:
virtual IP leases (one identity on two devices, FAILED_CP_REQUIRED), EAP-MSCHAPv2 retry framing,
our EAP client's refusals, MOBIKE return routability checks, redirect loops and lost answers."""

from __future__ import annotations

from engine.events import ChildSaInstalled, NegotiationFailed
from engine.policy.model import PoolConfig
from engine.pools import Leases

from tests.engine.test_ike_roadwarrior import rw_pair

V4 = PoolConfig("rw", "198.51.100.128/29")  # .129-.134


# ---------------------------------------------------------------- one identity, two devices
def test_a_second_device_of_the_same_identity_gets_an_address_of_its_own():
    """charon's mem_pool shares an online lease only with the same peer (address and port: a
    make-before-break reauthentication); two tunnels claiming one address take each other's traffic."""
    leases = Leases([V4])
    laptop = leases.acquire("rw", "alice", "sa1", 0.0, peer=("192.0.2.10", 4500))
    phone = leases.acquire("rw", "alice", "sa2", 0.0, peer=("192.0.2.11", 4500))
    assert laptop.address != phone.address
    again = leases.acquire("rw", "alice", "sa3", 0.0, peer=("192.0.2.10", 4500))  # the laptop reauthenticates
    assert again.address == laptop.address and again.holders == ("sa1", "sa3")
    assert sorted(str(x.address) for x in leases.leases_of("alice")) == ["198.51.100.129", "198.51.100.130"]
    # A replacing IKE SA (INITIAL_CONTACT) takes the address over from another address, when the
    # SAs holding it are the ones that go for it.
    moved = leases.acquire("rw", "alice", "sa4", 0.0, peer=("192.0.2.12", 500),
                           take_over=lambda lease: set(lease.holders) <= {"sa2"})
    assert moved.address == phone.address
    for h in ("sa1", "sa2", "sa3", "sa4"):
        leases.release(h)
    assert leases.usage()[0].used == 0
    # Back later: alice gets an address she had, not a third one.
    assert str(leases.acquire("rw", "alice", "sa5", 1.0, peer=("192.0.2.13", 500)).address) in (
        "198.51.100.129", "198.51.100.130")


def test_while_the_other_device_is_online_the_one_that_left_gets_its_address_back():
    leases = Leases([V4])
    a = leases.acquire("rw", "alice", "sa1", 0.0, peer=("192.0.2.10", 500))
    b = leases.acquire("rw", "alice", "sa2", 0.0, peer=("192.0.2.11", 500))
    leases.release("sa2")
    assert leases.acquire("rw", "alice", "sa3", 0.0, peer=("192.0.2.12", 500)).address == b.address
    assert leases.lease_of("sa1").address == a.address
    leases.release("sa1")  # the first device leaves while the other is on: it too gets its address back
    assert leases.acquire("rw", "alice", "sa4", 0.0, peer=("192.0.2.10", 500)).address == a.address


def test_gateway_gives_another_device_of_an_online_identity_its_own_address():
    """The client (no INITIAL_CONTACT: another device of the same user is up) must not get the
    address already routed to that device."""
    p = rw_pair()
    other = p.b.vips.leases.acquire("rw", "left.example", "other-device", p.now)
    p.a.initial_contact = lambda sa: False
    p.a.initiate("tun", p.now)
    p.advance(1)
    (sa_b,) = p.b.sas
    assert sa_b.remote_vips and sa_b.remote_vips != (str(other.address),)
    assert [str(t) for t in p.of("b", ChildSaInstalled)[0].remote_ts] == [f"{sa_b.remote_vips[0]}/32"]
    assert [u.used for u in p.b.vips.leases.usage()] == [2]


def test_a_client_sending_initial_contact_takes_its_old_address_over():
    """The client lost its state and comes back from another port (a NAT rebinding) with
    INITIAL_CONTACT: its old IKE SA goes (§2.4), so the old address is the new SA's. Without
    INITIAL_CONTACT the old SA stays, and so does its address: the new one gets another."""
    for initial_contact, same in ((True, True), (False, False)):
        p = rw_pair()
        p.a.initiate("tun", p.now)
        p.advance(1)
        (old,) = p.b.sas
        holder = old.vip_holders[0]
        # As if the gateway had seen the first IKE SA from another port.
        p.b.vips.leases.acquire("rw", "left.example", holder, p.now, peer=("192.0.2.1", 1024))
        p.a.sas[0].destroy(p.now, "the client lost its state")
        if not initial_contact:
            p.a.initial_contact = lambda sa: False
        p.a.initiate("tun", p.now)
        p.advance(1)
        new = [s for s in p.b.sas if s is not old]
        assert new and (new[0].remote_vips == old.remote_vips) == same, (initial_contact, new[0].remote_vips)
        assert old.alive != initial_contact


def test_initial_contact_of_another_ike_identity_does_not_take_an_address_its_sas_keep():
    """The same EAP user on a second device (another IKE identity, as Windows' address IDs): its
    INITIAL_CONTACT ends no SA of the first device, so it must not get the first device's address."""
    p = rw_pair()
    ghost = p.b.vips.leases.acquire("rw", "left.example", ("no such SA", "rw"), p.now, peer=("192.0.2.77", 4500))
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert p.b.sas[0].remote_vips and p.b.sas[0].remote_vips != (str(ghost.address),)


def test_a_client_asking_no_virtual_ip_of_a_pool_connection_gets_failed_cp_required():
    """RFC 7296 §3.10.1 and charon's ike_config: a connection with pools expects a CFG_REQUEST;
    without one the client's dynamic selector would be its public (NAT) address. The IKE SA
    comes up, without a CHILD SA, with a reason on both sides."""
    p = rw_pair(vips=())
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert not p.of("a", ChildSaInstalled) and not p.of("b", ChildSaInstalled)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "FAILED_CP_REQUIRED" and "vips" in gw.reason
    (client,) = p.of("a", NegotiationFailed)
    assert client.notify == "FAILED_CP_REQUIRED" and "vips" in client.reason
    assert [u.used for u in p.b.vips.leases.usage()] == [0]


# ---------------------------------------------------------------- EAP-MSCHAPv2 retry framing
def test_mschapv2_failure_request_carries_the_responses_id_and_the_retry_goes_on_with_the_next():
    """RFC 2759 §6 (Failure: its Identifier is a copy of the Response's) and charon's
    eap_mschapv2.c process_server_retry (``ms_chapv2_id = this->mschapv2id++``): the Failure
    request answers the Response's MS-CHAPv2-ID; the retried Response and the Success use the next."""
    from engine.eap import Outcome
    from engine.eap import packet as pk
    from engine.eap.mschapv2 import MschapV2Peer, MschapV2Server
    from engine.secret import Secret
    from engine.wire.constants import EapCode

    users = {b"alice": Secret("correct horse")}
    server = MschapV2Server(users.get, random=lambda n: b"\x11" * n)
    challenge = server.start(5)
    response = MschapV2Peer(b"alice", Secret("wrong"), random=lambda n: b"\x22" * n).process(challenge).packet
    assert response.type_data[1] == 5
    retry = server.process(response, 6)
    assert retry.outcome is Outcome.CONTINUE and retry.packet.type_data[0] == 4  # Failure, R=1
    assert retry.packet.type_data[1] == 5
    # The user retypes the password: the peer answers the new challenge with the next MS-CHAPv2-ID.
    new_challenge = bytes.fromhex(retry.packet.type_data.split(b"C=")[1][:32].decode())
    again = pk.EapPacket(EapCode.REQUEST, 6, 26, bytes((1, 6, 0, 0, 16)) + new_challenge + b"gw")
    good = MschapV2Peer(b"alice", Secret("correct horse"), random=lambda n: b"\x33" * n).process(again).packet
    ok = server.process(good, 7)
    assert ok.outcome is Outcome.CONTINUE and ok.packet.type_data[0] == 3  # Success request
    assert ok.packet.type_data[1] == 6


# ---------------------------------------------------------------- MOBIKE (RFC 4555)
def test_a_return_routability_check_gets_its_cookie2_back_and_moves_nothing():
    """RFC 4555 §3.8: the recipient of an INFORMATIONAL request with COOKIE2 copies it into the
    response (charon's task manager hands any INFORMATIONAL with COOKIE2 to ike_mobike); a check
    without UPDATE_SA_ADDRESSES (§5.2) must not move the SA."""
    from engine.ike.exchanges.informational import _Informational
    from engine.wire.constants import NotifyType
    from engine.wire.mobility import cookie2

    from tests.engine.test_ike_mobike import pair

    got = []

    class _Check(_Informational):
        name = "INFORMATIONAL (return routability check)"

        def build(self, now):
            return [cookie2(b"\x5a" * 16)]

        def response(self, exchange, payloads, now):
            got.extend(payloads)
            super().response(exchange, payloads, now)

    p = pair()
    client, gw = p.a.sas[0], p.b.sas[0]
    before = (gw.local, gw.remote, gw.mobike_moves)
    client.start(_Check(client), p.now)
    p.advance(1)
    echoed = [n for n in got if getattr(n, "type", None) == NotifyType.COOKIE2]
    assert [n.data for n in echoed] == [b"\x5a" * 16]
    assert (gw.local, gw.remote, gw.mobike_moves) == before and gw.established and client.established


# ---------------------------------------------------------------- EAP client (RFC 7296 §2.16)
def test_an_eap_failure_in_the_gateways_first_answer_is_said_in_plain_words():
    """A gateway whose method cannot start answers the first IKE_AUTH with IDr, AUTH and
    EAP-Failure (ours does, and charon's eap_authenticator when it has no method): the client says
    the gateway refused EAP, not an internal state-machine message."""
    from tests.engine.test_ike_roadwarrior import eap_pair

    p = eap_pair(gw_auth="eap-tls", eap_id=None)
    p.a.initiate("tun", p.now)
    p.advance(5)
    (client,) = p.of("a", NegotiationFailed)
    assert client.notify == "AUTHENTICATION_FAILED" and "EAP-Failure" in client.reason, client.reason
    assert "state" not in client.reason
    assert not p.a.sas


# ---------------------------------------------------------------- redirect (RFC 5685)
def test_a_lost_redirect_answer_is_sent_again_to_the_clients_retransmission():
    """The gateway forgets a redirected IKE SA at once, but its IKE_AUTH answer may be lost: a
    retransmission of the client's request gets it again (charon keeps the SA for
    half_open_timeout), instead of silence until the client gives up."""
    from engine.wire.constants import FLAG_RESPONSE, NON_ESP_MARKER, ExchangeType
    from engine.wire.message import decode_header

    from tests.engine.test_ike_redirect import OTHER, gateways

    p = gateways()
    lost = []

    def drop_first_auth_answer(side, d):
        data = d.data[len(NON_ESP_MARKER):] if d.data.startswith(NON_ESP_MARKER) else d.data
        try:
            hdr = decode_header(data)
        except Exception:
            return None
        if side == "b" and not lost and hdr.exchange == ExchangeType.IKE_AUTH and hdr.flags & FLAG_RESPONSE:
            lost.append(d)
            return False
        return None

    p.filter = drop_first_auth_answer
    p.a.initiate("tun", p.now)
    p.advance(30)
    assert lost, "the test did not drop the redirect answer"
    (sa,) = p.a.sas
    assert sa.remote[0] == OTHER and sa.established
    assert not p.of("a", NegotiationFailed)


def test_repeated_redirects_of_an_established_sa_start_one_successor_at_a_time():
    """A gateway repeating its INFORMATIONAL REDIRECT (RFC 5685 §5) while we still connect to the
    gateway it named started one more IKE SA per message, without bound."""
    from tests.engine.test_ike_redirect import OTHER, _Redirect, gateways

    p = gateways(first_to=None)
    p.a.initiate("tun", p.now)
    p.advance(1)
    old, gw = p.a.sas[0], p.b.sas[0]
    p.filter = lambda side, d: False if OTHER in (d.remote[0], d.local[0]) else None  # OTHER is slow
    for _ in range(8):
        gw.start(_Redirect(gw), p.now)
        p.advance(0.5)
    connecting = [s for s in p.a.sas if s.remote[0] == OTHER]
    assert len(connecting) == 1 and old.established


def test_a_gateway_redirecting_again_and_again_to_one_that_refuses_is_a_loop():
    """Each successor fails at once (the other gateway refuses it), the established SA is redirected
    again: we counted redirects only along the successors, so this loop never ended. (charon's
    limits, MAX_REDIRECTS within REDIRECT_PERIOD, but charon moves the SA's count to the successor,
    ike_sa.c redirect_established, so it does not bound this loop either: ours is stricter.)"""
    import dataclasses as dc

    from engine.ike.exchanges import redirect
    from engine.policy.proposals import parse_proposal

    from tests.engine.test_ike_redirect import OTHER, _Redirect, gateways

    p = gateways(first_to=None)
    tun, tun2 = p.b.policy.connections
    tun2 = dc.replace(tun2, proposals=(parse_proposal("aes128-sha256-modp3072", "ike"),))  # refuses us
    p.b.apply_policy(dc.replace(p.b.policy, connections=(tun, tun2)), p.now)
    p.a.initiate("tun", p.now)
    p.advance(1)
    old, gw = p.a.sas[0], p.b.sas[0]
    for _ in range(redirect.MAX_REDIRECTS + 2):
        if not gw.established:
            break
        gw.start(_Redirect(gw), p.now)
        p.advance(1)
    assert len([s for s in p.a.sas if s.remote[0] == OTHER]) == 0
    failed = [e for e in p.of("a", NegotiationFailed) if e.notify == "REDIRECT"]
    assert failed and "only 5 redirects are allowed" in failed[-1].reason
    assert not old.established


def test_an_ike_rekey_hands_over_a_lease_even_one_a_reload_left_stale():
    leases = Leases([V4])
    a = leases.acquire("rw", "alice", "old", 0.0, peer=("192.0.2.10", 500))
    assert leases.transfer("old", "new").address == a.address
    assert leases.lease_of("old") is None and leases.lease_of("new").holders == ("new",)
    leases.reload([PoolConfig("rw", "198.51.100.200-198.51.100.210")])
    assert [x.holders for x in leases.stale()] == [("new",)]
    assert leases.transfer("new", "newer").stale
    leases.release("newer")
    assert not leases.stale() and leases.transfer("nobody", "x") is None


def test_an_eap_client_refused_at_its_first_request_is_not_told_about_pre_shared_keys():
    """Our EAP client, refused with AUTHENTICATION_FAILED before any EAP round (the gateway has no EAP
    connection for it), said 'check that both sides use the same pre-shared key'."""
    from tests.engine.test_ike_roadwarrior import eap_pair

    p = eap_pair(gw_auth="")
    p.a.initiate("tun", p.now)
    p.advance(5)
    (client,) = p.of("a", NegotiationFailed)
    assert client.notify == "AUTHENTICATION_FAILED" and client.sent_by_peer
    assert "pre-shared key" not in client.reason and "EAP" in client.reason, client.reason
