"""Road warriors on the two-endpoint bench: configuration payloads (virtual IPs from pools,
RFC 7296 §3.15) in IKE_AUTH, both roles; refusals in plain words."""

from __future__ import annotations

import dataclasses

from engine.events import ChildSaDeleted, ChildSaInstalled, ChildSaMoved, NegotiationFailed, VirtualIpsChanged
from engine.datapath.base import NullDatapath
from engine.ike.exchanges.informational import Notify
from engine.policy.model import AuthConfig, EapSecret, PoolConfig
from engine.runtime.engine import EngineRuntime
from engine.secret import Secret
from engine.wire.constants import NotifyType

from tests.engine.ike_pair import LEFT, RIGHT, Pair, child, connection, ike_data, mirror, policy

POOL = PoolConfig("rw", "198.51.100.192/28", dns=("198.51.100.53",), split_include=("198.51.100.0/25",))


def rw_pair(*, pools=("rw",), pool_cfgs=(POOL,), vips=("0.0.0.0",)):
    """a: a client asking for a virtual IP (dynamic === office LAN); b: the gateway leasing it."""
    client = connection(children=(child(local_ts="dynamic", remote_ts="198.51.100.0/25"),), vips=vips)
    gw = mirror(client, remote_addrs=(), vips=(), pools=pools)
    return Pair(policy(client, address=LEFT), dataclasses.replace(policy(gw, address=RIGHT), pools=pool_cfgs))


def test_client_gets_a_virtual_ip_from_the_pool_and_its_selectors_follow():
    p = rw_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    ia, ib = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert len(ia) == 1 and len(ib) == 1
    # the first address of the pool (a network's first address is not handed out)
    assert [str(t) for t in ia[0].local_ts] == ["198.51.100.193/32"]
    assert [str(t) for t in ib[0].remote_ts] == ["198.51.100.193/32"]
    sa_a, sa_b = p.a.sas[0], p.b.sas[0]
    assert sa_a.local_vips == ("198.51.100.193",) and sa_b.remote_vips == ("198.51.100.193",)
    assert sa_a.vip_dns == ("198.51.100.53",) and sa_a.vip_subnets == ("198.51.100.0/25",)
    assert p.a.status(p.now)[0].virtual_ips == ("198.51.100.193",)
    info = p.b.status(p.now)[0]
    assert (info.virtual_ips, info.pool) == (("198.51.100.193",), "rw")
    assert [(u.used, u.size) for u in p.b.vips.leases.usage()] == [(1, 14)]


def test_lease_is_released_on_delete_and_the_same_identity_gets_it_back():
    p = rw_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    p.a.terminate("tun", p.now)
    p.advance(1)
    assert not p.b.sas
    assert [(u.used, u.remembered) for u in p.b.vips.leases.usage()] == [(0, 1)]
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert p.b.sas[0].remote_vips == ("198.51.100.193",)
    assert [u.used for u in p.b.vips.leases.usage()] == [1]


def test_lease_follows_an_ike_rekey():
    p = rw_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    p.a.rekey("tun", p.now, ike=True)
    p.advance(5)
    (sa_b,) = p.b.sas
    assert sa_b.remote_vips == ("198.51.100.193",)
    assert p.b.vips.leases.lease_of((sa_b.unique_id, "rw")) is not None
    assert [u.used for u in p.b.vips.leases.usage()] == [1]
    p.a.terminate("tun", p.now)
    p.advance(1)
    assert [u.used for u in p.b.vips.leases.usage()] == [0]


def test_a_pool_reload_ends_only_the_clients_whose_address_left_the_pool():
    """Leases inside the new range move with the pool; a client whose address is no longer in it
    is deleted (with the reason) instead of keeping an address the pool does not have, and comes
    back with one of the new pool."""
    p = rw_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    (gw,) = p.b.sas
    assert gw.remote_vips == ("198.51.100.193",)
    wider = dataclasses.replace(POOL, addrs="198.51.100.128/25")
    p.b.apply_policy(dataclasses.replace(p.b.policy, pools=(wider,)), p.now)
    p.advance(1)
    assert p.b.sas == [gw] and gw.established
    assert [(u.used, u.stale) for u in p.b.vips.leases.usage()] == [(1, 0)]
    narrow = dataclasses.replace(POOL, addrs="198.51.100.200-198.51.100.210")
    p.b.apply_policy(dataclasses.replace(p.b.policy, pools=(narrow,)), p.now)
    p.advance(2)
    assert not p.b.sas and not p.a.sas
    assert [(u.used, u.stale) for u in p.b.vips.leases.usage()] == [(0, 0)] and not p.b.vips.leases.stale()
    (gone,) = p.of("b", ChildSaDeleted)
    assert "198.51.100.193 is no longer in pool 'rw'" in gone.reason, gone.reason
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert p.b.sas[0].remote_vips == ("198.51.100.200",)


def test_virtual_ip_request_without_a_pool_is_refused_per_rfc():
    """RFC 7296 §3.15.4: INTERNAL_ADDRESS_FAILURE, no CHILD SA, a reason in plain words on both sides."""
    p = rw_pair(pools=(), pool_cfgs=())
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert not p.of("a", ChildSaInstalled) and not p.of("b", ChildSaInstalled)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "INTERNAL_ADDRESS_FAILURE" and "no pools" in gw.reason and "virtual IP" in gw.reason
    (client,) = p.of("a", NegotiationFailed)
    assert client.notify == "INTERNAL_ADDRESS_FAILURE" and "assigned none" in client.reason
    p.advance(5)
    assert not p.a.sas and not p.b.sas  # the client deletes the IKE SA it cannot use


def test_exhausted_pool_is_refused_with_internal_address_failure():
    tiny = PoolConfig("rw", "198.51.100.200-198.51.100.200")
    p = rw_pair(pool_cfgs=(tiny,))
    p.b.vips.leases.acquire("rw", "someone-else", "other", p.now)
    p.a.initiate("tun", p.now)
    p.advance(1)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "INTERNAL_ADDRESS_FAILURE" and "no free address" in gw.reason


def test_without_vips_no_configuration_payload_is_sent():
    p = rw_pair(vips=(), pools=())
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert not p.b.sas[0].remote_vips
    # the client's own address stands for dynamic, as before
    assert [str(t) for t in p.of("a", ChildSaInstalled)[0].local_ts] == [f"{LEFT}/32"]


def test_client_is_told_to_install_and_remove_its_virtual_ip():
    """VirtualIpsChanged: the datapath puts the address on the tunnel device before the CHILD SA, and
    takes it off when the IKE SA goes; an IKE rekey keeps it there (no removal)."""
    p = rw_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    (on,) = p.of("a", VirtualIpsChanged)
    assert (on.addresses, on.assigned, on.dns, on.subnets) == (("198.51.100.193",), True, ("198.51.100.53",),
                                                               ("198.51.100.0/25",))
    kinds = [type(e) for e in p.events["a"] if isinstance(e, (VirtualIpsChanged, ChildSaInstalled))]
    assert kinds == [VirtualIpsChanged, ChildSaInstalled]
    p.a.rekey("tun", p.now, ike=True)
    p.advance(5)
    assert len(p.of("a", VirtualIpsChanged)) == 1 and p.a.sas[0].local_vips == ("198.51.100.193",)
    p.a.terminate("tun", p.now)
    p.advance(1)
    off = p.of("a", VirtualIpsChanged)[-1]
    assert (off.addresses, off.assigned) == (("198.51.100.193",), False)
    assert not p.of("b", VirtualIpsChanged)  # the gateway installs nothing for its clients' addresses


# ---------------------------------------------------------------- EAP (RFC 7296 §2.16)
def eap_pair(*, client_password="alice-password-0123", gw_auth="eap-mschapv2", eap_id="%any", pools=("rw",)):
    """a: an EAP-MSCHAPv2 client (alice) asking for a virtual IP; b: the gateway (its own AUTH is
    PSK here: the bench has no certificates; the interop test uses one)."""
    client = connection(children=(child(local_ts="dynamic", remote_ts="198.51.100.0/25"),), vips=("0.0.0.0",))
    client = dataclasses.replace(client, local=AuthConfig("eap-mschapv2", client.local.id, eap_id="alice"))
    gw = mirror(client, remote_addrs=(), vips=(), pools=pools)
    gw = dataclasses.replace(gw, remote=AuthConfig(gw_auth, None, eap_id=eap_id) if gw_auth
                             else AuthConfig("psk", client.local.id))
    pa, pb = policy(client, address=LEFT), dataclasses.replace(policy(gw, address=RIGHT), pools=(POOL,))
    pa = dataclasses.replace(pa, secrets=dataclasses.replace(
        pa.secrets, eap=(EapSecret("me", ("alice",), Secret(client_password)),)))
    pb = dataclasses.replace(pb, secrets=dataclasses.replace(
        pb.secrets, eap=(EapSecret("alice", ("alice",), Secret("alice-password-0123")),)))
    return Pair(pa, pb)


def test_eap_mschapv2_client_and_gateway_with_msk_auth_both_ways():
    p = eap_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    assert not p.of("a", NegotiationFailed) and not p.of("b", NegotiationFailed)
    ia, ib = p.of("a", ChildSaInstalled), p.of("b", ChildSaInstalled)
    assert len(ia) == 1 and len(ib) == 1 and ia[0].spi_in == ib[0].spi_out
    info = p.b.status(p.now)[0]
    assert (info.eap_identity, info.eap_method) == ("alice", "EAP-MSCHAPv2")
    assert info.virtual_ips == ("198.51.100.193",) and info.remote_id == "left.example"
    assert p.a.status(p.now)[0].eap_method == "EAP-MSCHAPv2"
    # rounds: IKE_AUTH without AUTH, EAP-Identity, the MS-CHAPv2 challenge/response/success, AUTH
    auths = [e for e in p.events["a"] if type(e).__name__ == "ExchangeSent" and e.message.exchange == "IKE_AUTH"]
    assert "AUTH" not in auths[0].message.payloads and auths[1].message.payloads == ("EAP/RES/ID",)
    assert [a.message.payloads for a in auths[2:]] == [("EAP/RES/MSCHAPV2",)] * 2 + [("AUTH",)]


def test_wrong_eap_password_fails_in_plain_words_on_both_sides():
    p = eap_pair(client_password="not-alice-password")
    p.a.initiate("tun", p.now)
    p.advance(5)
    assert not p.of("a", ChildSaInstalled) and not p.of("b", ChildSaInstalled)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "AUTHENTICATION_FAILED" and "EAP-MSCHAPv2" in gw.reason and "alice" in gw.reason
    (client,) = p.of("a", NegotiationFailed)
    assert client.notify == "AUTHENTICATION_FAILED" and "EAP-MSCHAPv2" in client.reason
    assert not p.a.sas and not p.b.sas
    assert [u.used for u in p.b.vips.leases.usage()] == [0]


def test_eap_client_refused_when_the_gateway_has_no_eap_connection():
    """Issue 16 item 5: AUTHENTICATION_FAILED and 'the peer wants EAP' (was INVALID_SYNTAX)."""
    p = eap_pair(gw_auth="")
    p.a.initiate("tun", p.now)
    p.advance(5)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "AUTHENTICATION_FAILED" and "wants EAP" in gw.reason
    (client,) = p.of("a", NegotiationFailed)
    assert client.notify == "AUTHENTICATION_FAILED" and client.sent_by_peer
    assert not p.a.sas and not p.b.sas


def test_eap_identity_not_allowed_by_eap_id_is_refused():
    p = eap_pair(eap_id="bob")
    p.a.initiate("tun", p.now)
    p.advance(5)
    (gw,) = p.of("b", NegotiationFailed)
    assert "'alice' is not allowed by this connection's eap_id" in gw.reason
    assert not p.b.sas


# ---------------------------------------------------------------- MOBIKE (RFC 4555), as responder
def test_mobike_update_moves_the_ike_and_child_sas_to_the_new_address():
    """UPDATE_SA_ADDRESSES from a new address: the IKE SA answers there, every CHILD SA follows
    (ChildSaMoved, same SPIs) once the client answered there, the move is counted; without MOBIKE
    agreed nothing moves."""
    p = rw_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    client, gw = p.a.sas[0], p.b.sas[0]
    assert gw.mobike and client.mobike  # our client offered MOBIKE, the gateway agreed
    client.start(Notify(client, NotifyType.UPDATE_SA_ADDRESSES), p.now)
    (d,) = p.a.datagrams_to_send()
    # (IKE is on the NAT-T ports since IKE_SA_INIT, RFC 4555 §3.3: the message carries the marker)
    assert d.local[1] == 4500
    p.b.receive_datagram(ike_data(d.data), d.remote, ("192.0.2.3", 4500), p.now)
    answer, check = p.b.datagrams_to_send()  # the answer, and the return routability check (RFC 4555 §3.7)
    assert [a.remote for a in (answer, check)] == [("192.0.2.3", 4500)] * 2
    events = []
    while (e := p.b.next_event()) is not None:
        events.append(e)
    assert not [e for e in events if isinstance(e, ChildSaMoved)]  # not before the client answers there
    p.a.receive_datagram(ike_data(check.data), check.remote, check.local, p.now)
    (echo,) = p.a.datagrams_to_send()
    p.b.receive_datagram(ike_data(echo.data), ("192.0.2.3", 4500), echo.remote, p.now)
    while (e := p.b.next_event()) is not None:
        events.append(e)
    moved = [e for e in events if isinstance(e, ChildSaMoved)]
    (child,) = gw.children.values()
    assert [(m.spi_in, m.remote_addr, m.remote_port) for m in moved] == [(child.spi_in_int, "192.0.2.3", 4500)]
    assert gw.remote == ("192.0.2.3", 4500) and p.b.status(p.now)[0].mobike_moves == 1
    assert gw.state.value == "ESTABLISHED" and len(gw.children) == 1  # no rekey, no new SA


class _NoMove:
    """A datapath that cannot re-point an SA (as the kernel one, for now)."""

    def __init__(self) -> None:
        self.installed = {}

    def install(self, ev) -> None:
        self.installed[ev.spi_in] = ev

    def remove(self, ev) -> None:
        self.installed.pop(ev.spi_in, None)


def test_a_datapath_that_cannot_move_an_sa_gets_it_rekeyed_onto_the_new_address():
    p = rw_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    gw = p.b.sas[0]
    (child,) = gw.children.values()
    rt = EngineRuntime(p.b.policy, datapath=_NoMove())
    rt.endpoint = p.b
    rt._dispatch(ChildSaMoved(gw.unique_id, gw.name, child.config.name, child.spi_in_int, child.spi_out_int,
                              RIGHT, "192.0.2.3", 500, 500, False))
    assert type(gw.active).__name__ == "ChildRekey"  # the rekey is under way
    NullDatapath().move(ChildSaMoved(1, "x", "y", 1, 2, RIGHT, "192.0.2.3"))  # nothing installed: no error


def test_status_snapshot_carries_pool_usage():
    p = rw_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    rt = EngineRuntime(p.b.policy)
    rt.endpoint = p.b
    (pool,) = rt.status().pools
    assert (pool.name, pool.addrs, pool.size, pool.used) == ("rw", "198.51.100.192/28", 14, 1)


def test_eap_identity_and_virtual_ip_stay_with_the_sa_after_an_ike_rekey():
    p = eap_pair()
    p.a.initiate("tun", p.now)
    p.advance(1)
    old = p.b.sas[0].unique_id
    p.a.rekey("tun", p.now, ike=True)
    p.advance(5)
    (info,) = p.b.status(p.now)
    assert info.unique_id != old
    assert (info.eap_identity, info.eap_method, info.virtual_ips) == ("alice", "EAP-MSCHAPv2", ("198.51.100.193",))


def test_eap_method_that_cannot_start_fails_with_a_reason():
    """EAP-TLS on a gateway without a certificate loaded: EAP-Failure at once, said in plain words."""
    p = eap_pair(gw_auth="eap-tls", eap_id=None)
    p.a.initiate("tun", p.now)
    p.advance(5)
    (gw,) = p.of("b", NegotiationFailed)
    assert gw.notify == "AUTHENTICATION_FAILED" and "could not start" in gw.reason and "EAP-TLS" in gw.reason
    assert not p.b.sas and not p.a.sas
