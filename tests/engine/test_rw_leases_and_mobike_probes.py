"""Review of the rw14 review (revrw14): virtual IP leases per device after a take-over,
FAILED_CP_REQUIRED for a configuration request that asks for no address."""

from __future__ import annotations

from engine.policy.model import PoolConfig
from engine.pools import Leases

from tests.engine.test_ike_roadwarrior import rw_pair

V4 = PoolConfig("rw", "198.51.100.128/29")  # .129-.134


def test_a_lease_taken_over_belongs_to_the_new_device_for_its_next_reauthentication():
    """charon (mem_pool get_existing) records the peer of the IKE SA that now holds the address: after
    INITIAL_CONTACT the old SA is gone and the lease is the new one's. Ours kept the old peer, so the
    device's next make-before-break reauthentication (same address and port, no INITIAL_CONTACT)
    got another address and the client's IP changed under its connections."""
    leases = Leases([V4])
    old = leases.acquire("rw", "alice", "sa1", 0.0, peer=("192.0.2.10", 4500))
    new = leases.acquire("rw", "alice", "sa2", 1.0, peer=("192.0.2.10", 1024),
                         take_over=lambda lease: set(lease.holders) <= {"sa1"})
    assert new.address == old.address
    leases.release("sa1")  # INITIAL_CONTACT ended it
    reauth = leases.acquire("rw", "alice", "sa3", 2.0, peer=("192.0.2.10", 1024))
    assert reauth.address == old.address and reauth.holders == ("sa2", "sa3")


def test_gateway_reauthentication_after_an_initial_contact_take_over_keeps_the_address():
    p = rw_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    (first,) = p.b.sas
    # As if the gateway had seen the first IKE SA from another port (the NAT mapping changed since).
    p.b.vips.leases.acquire("rw", "left.example", first.vip_holders[0], p.now, peer=("192.0.2.1", 1024))
    p.a.sas[0].destroy(p.now, "the client lost its state")
    p.a.initiate("tun", p.now)  # with INITIAL_CONTACT: the first SA goes, its address is taken over
    p.advance(1)
    (second,) = [s for s in p.b.sas if s.alive]
    assert second is not first and second.remote_vips == first.remote_vips
    # A make-before-break reauthentication of that device: same address and port, no INITIAL_CONTACT.
    p.a.initial_contact = lambda sa: False
    p.a.registry.current = lambda name: None  # a second IKE SA beside the first (make-before-break)
    p.a.initiate("tun", p.now)
    p.advance(1)
    third = [s for s in p.b.sas if s.alive and s not in (first, second)]
    assert third and third[0].remote_vips == second.remote_vips, third[0].remote_vips
    assert [u.used for u in p.b.vips.leases.usage()] == [1]


def test_a_configuration_request_without_an_address_on_a_pool_connection_gets_failed_cp_required(monkeypatch):
    """charon's ike_config counts the INTERNAL_IP4/6_ADDRESS attributes asked for, not the CP: a
    CFG_REQUEST with none of them (only the application version, say) on a connection with pools is
    answered FAILED_CP_REQUIRED like no CP at all. Ours answered an empty CFG_REPLY and a CHILD SA
    whose dynamic selector was the client's public address, what the rw14 fix meant to stop."""
    from engine.events import ChildSaInstalled, NegotiationFailed
    from engine.ike import config_payload
    from engine.wire.cp import config_request

    monkeypatch.setattr(config_payload, "request", lambda conn: config_request(ip4=False, app_version=""))
    p = rw_pair(vips=())
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert not p.of("b", ChildSaInstalled) and not p.of("a", ChildSaInstalled)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "FAILED_CP_REQUIRED" and "asked for none" in gw.reason, gw.reason
    assert [u.used for u in p.b.vips.leases.usage()] == [0]


def test_a_configuration_request_without_an_address_and_no_pools_is_answered_as_before(monkeypatch):
    from engine.events import ChildSaInstalled
    from engine.ike import config_payload
    from engine.wire.cp import config_request

    monkeypatch.setattr(config_payload, "request", lambda conn: config_request(ip4=False, app_version=""))
    p = rw_pair(vips=(), pools=())
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert p.of("b", ChildSaInstalled) and p.of("a", ChildSaInstalled)


def test_a_mobike_dpd_with_nat_detection_gets_the_gateways_nat_detection_back():
    """charon's client behind a NAT sends its DPDs as MOBIKE INFORMATIONALs with NAT_DETECTION
    notifies only (task_manager_v2.c queue_dpd: 'use mobike enabled DPD to detect NAT mapping
    changes'); its task manager hands such a request to ike_mobike, whose answer carries NAT-D for
    the addresses the request came from (ike_natd build_r). It is how the client learns that its
    NAT mapping changed and sends UPDATE_SA_ADDRESSES. Ours answered it empty (only a COOKIE2 made
    it a MOBIKE request), so a NAT rebinding went unnoticed. Nothing moves without an update."""
    from engine.ike.exchanges.informational import _Informational
    from engine.ike.init import nat_detection_hash, nat_notifies
    from engine.wire.constants import NotifyType

    from tests.engine.test_ike_mobike import pair

    got = []

    class _Dpd(_Informational):
        name = "INFORMATIONAL (MOBIKE DPD)"

        def build(self, now):
            sa = self.sa
            return nat_notifies(sa.spi_i, sa.spi_r, sa.local, sa.remote)

        def response(self, exchange, payloads, now):
            got.extend(payloads)
            super().response(exchange, payloads, now)

    p = pair()
    client, gw = p.a.sas[0], p.b.sas[0]
    before = (gw.local, gw.remote, gw.mobike_moves, gw.nat.local_behind, gw.nat.remote_behind)
    client.start(_Dpd(client), p.now)
    p.advance(1)
    dst = [n.data for n in got if getattr(n, "type", None) == NotifyType.NAT_DETECTION_DESTINATION_IP]
    assert dst == [nat_detection_hash(gw.spi_i, gw.spi_r, *gw.remote)], got
    assert (gw.local, gw.remote, gw.mobike_moves, gw.nat.local_behind, gw.nat.remote_behind) == before
    assert gw.established and client.established


def test_an_informational_with_nat_detection_and_a_delete_stays_an_ordinary_informational():
    from engine.ike.exchanges import mobike
    from engine.ike.init import nat_notifies
    from engine.wire.payloads import DeletePayload

    from tests.engine.test_ike_mobike import pair

    p = pair()
    gw = p.b.sas[0]
    natd = nat_notifies(gw.spi_i, gw.spi_r, gw.remote, gw.local)
    assert mobike.wants_update(gw, natd)
    assert not mobike.wants_update(gw, [*natd, DeletePayload(1, 0, ())])


def _bob_beside_alice(*, same_user: bool = False):
    """The EAP gateway with alice up (client ``p.a``) and a second client ``q.a`` at another address
    (another home, behind another NAT) with the same IKE identity: another EAP user (bob), or
    alice again on a second device. ``q`` shares the gateway ``p.b``."""
    import dataclasses

    from engine.policy.model import EapSecret
    from engine.secret import Secret

    from tests.engine.ike_pair import Pair
    from tests.engine.test_ike_roadwarrior import eap_pair

    p = eap_pair()
    pb = p.b.policy
    gw_pol = dataclasses.replace(pb, secrets=dataclasses.replace(
        pb.secrets, eap=pb.secrets.eap + (EapSecret("bob", ("bob",), Secret("bob-password-0123")),)))
    p.b.apply_policy(gw_pol, p.now)
    p.a.initiate("tun", p.now)
    p.advance(1)
    (first,) = p.b.sas
    pa = p.a.policy
    (conn,) = pa.connections
    user, password = ("alice", "alice-password-0123") if same_user else ("bob", "bob-password-0123")
    second = dataclasses.replace(conn, local=dataclasses.replace(conn.local, eap_id=user), local_addrs=("192.0.2.3",))
    q = Pair(dataclasses.replace(pa, connections=(second,), secrets=dataclasses.replace(
        pa.secrets, eap=(EapSecret("me", (user,), Secret(password)),))), gw_pol)
    q.b, q.now = p.b, p.now  # one gateway: q's client reaches p's
    q.a.initiate("tun", q.now)  # a client of its own: INITIAL_CONTACT
    q.advance(1)
    return p, first


def test_initial_contact_of_another_eap_user_behind_the_same_ike_identity_ends_no_sa_of_the_first():
    """charon's uniqueness (ike_sa_manager check_uniqueness, INITIAL_CONTACT included) compares the
    peer's EAP identity (get_other_eap_id), not its IKE identity: Windows sends its address as IDi,
    and two users at home behind 192.168.1.10 are two peers. Ours compared the IKE identity only, so
    bob logging in (with INITIAL_CONTACT) ended alice's IKE SA."""
    p, alice = _bob_beside_alice()
    bob = [s for s in p.b.sas if s is not alice]
    assert bob and bob[0].eap_identity == "bob" and bob[0].established
    assert alice.alive and alice.established, "bob's INITIAL_CONTACT ended alice's IKE SA"
    assert alice.remote_vips != bob[0].remote_vips
    assert [u.used for u in p.b.vips.leases.usage()] == [2]


def test_initial_contact_of_the_same_eap_user_behind_the_same_ike_identity_still_replaces():
    p, first = _bob_beside_alice(same_user=True)
    (again,) = [s for s in p.b.sas if s.alive]
    assert again is not first and not first.alive and again.remote_vips == first.remote_vips
    assert [u.used for u in p.b.vips.leases.usage()] == [1]


def test_an_eap_users_ike_sa_rekeyed_is_still_the_one_its_initial_contact_replaces():
    """The EAP user is part of the identity an INITIAL_CONTACT looks for: an IKE SA made by an IKE
    rekey carries it too (else the device coming back after a crash left its rekeyed SA and
    address behind, and got a second one)."""
    from tests.engine.test_ike_roadwarrior import eap_pair

    p = eap_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    p.a.rekey("tun", p.now, ike=True)
    p.advance(5)
    (rekeyed,) = p.b.sas
    assert rekeyed.eap_identity == "alice" and rekeyed.remote_vips
    p.a.sas[0].destroy(p.now, "the client lost its state")
    p.a.initiate("tun", p.now)
    p.advance(1)
    (again,) = [s for s in p.b.sas if s.alive]
    assert again is not rekeyed and not rekeyed.alive and again.remote_vips == rekeyed.remote_vips
    assert [u.used for u in p.b.vips.leases.usage()] == [1]
