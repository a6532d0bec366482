"""Issue 10: road warriors against charon 5.9.8 in the namespaces: virtual IPs from pools
(configuration payloads, RFC 7296 §3.15) in both roles, traffic from the virtual IP, the
lease released on disconnect and the same address given back to the same identity."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomli_w

from tests.interop.lab import lab, require_charon_plugins
from tests.interop.peers import (
    ADDR,
    Peers,
    FAST_OURS,
    charon_ike_sas,
    FQDN_SECRETS,
    INNER,
    charon_conn,
    control,
    module_lab,  # noqa: F401  (fixture)
    our_conn,
    peers,  # noqa: F401  (fixture)
    sent,
    wait_or_explain,
    with_children,
)

from tests.interop.test_samples_vs_charon import make_certs, start_ours

pytestmark = pytest.mark.interop

POOL_FIRST, POOL_LAST = "198.51.100.200", "198.51.100.210"
DNS = "198.51.100.53"


def _gateway_policy(side: str, **conn) -> str:
    conns = our_conn(side, **{"remote_addrs": ["%any"], "pools": ["rw"], "mobike": False,
                              "children": {"remote_ts": ["dynamic"]}, **conn})
    doc = {"engine": {"datapath": "userspace", "listen": [ADDR[side]], "secrets": "secrets.toml", **FAST_OURS},
           "pools": {"rw": {"addrs": f"{POOL_FIRST}-{POOL_LAST}", "dns": [DNS],
                            "split_include": [f"{INNER[side]}/32"]}},
           "connections": conns}
    return tomli_w.dumps(doc)


def _pool_used(o) -> int:
    return sum(p["used"] for p in control(o, "status")["pools"])


def _charon_vip(c) -> str | None:
    m = re.search(r"local\s+'[^']*' @ [0-9.]+\[\d+\] \[([0-9.]+)\]", c.list_sas())
    return m.group(1) if m else None


def test_charon_client_gets_a_virtual_ip_from_our_pool(peers):
    """charon (vips = 0.0.0.0) against our gateway: it gets the pool's first address and our DNS,
    pings the host behind us from it, and gets the same address back after a disconnect."""
    c = peers.charon("left", charon_conn("left", vips="0.0.0.0", children={"local_ts": "dynamic"}))
    o = peers.ours("right", _gateway_policy("right"), FQDN_SECRETS)
    c.swanctl("--initiate", "--child", "t", "--timeout", "10", check=False)
    sas = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o)
    assert sas[0]["virtual_ips"] == [POOL_FIRST] and sas[0]["pool"] == "rw"
    assert sas[0]["children"][0]["remote_ts"] == [f"{POOL_FIRST}/32"]  # its TSi narrowed to the address
    log = c.log()
    assert f"installing new virtual IP {POOL_FIRST}" in log, log[-3000:]
    assert "parsed IKE_AUTH response 1 [ IDr AUTH CPRP(ADDR DNS SUBNET)" in log, log[-3000:]
    assert "processing INTERNAL_IP4_DNS attribute" in log  # (this charon has no resolve plugin to use it)
    assert _charon_vip(c) == POOL_FIRST
    peers.lab.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", POOL_FIRST,
                   INNER["right"], timeout=30)
    assert _pool_used(o) == 1
    # disconnect: the lease is released; the same identity comes back to the same address
    c.swanctl("--terminate", "--ike", "t", "--timeout", "10", check=False)
    wait_or_explain(lambda: not o.sas() and _pool_used(o) == 0, "our SA gone and the lease released", o)
    c.swanctl("--initiate", "--child", "t", "--timeout", "10", check=False)
    sas = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA again", o)
    assert sas[0]["virtual_ips"] == [POOL_FIRST]
    assert _charon_vip(c) == POOL_FIRST


def test_our_client_gets_and_installs_a_virtual_ip_from_charon(peers):
    """Our daemon (vips = 0.0.0.0, userspace datapath) against a charon gateway with a pool: the
    address goes on our TUN device and a ping from it reaches the host behind charon."""
    gw = charon_conn("right", remote_addrs="%any", pools="rw", children={"remote_ts": "dynamic"})
    gw["pools"] = {"rw": {"addrs": f"{POOL_FIRST}-{POOL_LAST}", "dns": DNS}}
    c = peers.charon("right", gw)
    policy = tomli_w.dumps({
        "engine": {"datapath": "userspace", "listen": [ADDR["left"]], "secrets": "secrets.toml", **FAST_OURS},
        "connections": our_conn("left", vips=["0.0.0.0"], mobike=False, children={"local_ts": ["dynamic"]})})
    o = peers.ours("left", policy, FQDN_SECRETS)
    o.cli("initiate", "t", "--no-wait")
    sas = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o)
    assert sas[0]["virtual_ips"] == [POOL_FIRST]
    assert sas[0]["children"][0]["local_ts"] == [f"{POOL_FIRST}/32"]
    listing = c.list_sas()
    assert "INSTALLED" in listing and re.search(rf"remote 'left.example' @ {re.escape(ADDR['left'])}\[\d+\] "
                                                rf"\[{re.escape(POOL_FIRST)}\]", listing), listing
    changed = wait_or_explain(lambda: o.events("VirtualIpsChanged"), "VirtualIpsChanged", o)
    assert changed[0]["addresses"] == [POOL_FIRST] and changed[0]["assigned"] and changed[0]["dns"] == [DNS]
    addrs = wait_or_explain(lambda: POOL_FIRST in peers.lab.exec("left", "ip", "-o", "addr").stdout
                            and peers.lab.exec("left", "ip", "-o", "addr").stdout, "the address on our TUN", o)
    assert re.search(rf"ipsec\S*\s+inet {re.escape(POOL_FIRST)}/32", addrs), addrs
    peers.lab.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", POOL_FIRST,
                   INNER["right"], timeout=30)
    o.cli("terminate", "t")
    wait_or_explain(lambda: POOL_FIRST not in peers.lab.exec("left", "ip", "-o", "addr").stdout,
                    "the address taken off our TUN", o)


# ------------------------------------------------------------------ EAP-MSCHAPv2 (RFC 7296 §2.16)
EAP_PASSWORD = "alice-eap-not-secret-0123"


def _eap_gateway(peers, side: str, *, password: str = EAP_PASSWORD, remote: dict | None = None,
                 proposal: str = "aes256gcm16-prfsha256-x25519"):
    """Our gateway: its certificate gw.example.org (our CA), EAP-MSCHAPv2 users, the pool."""
    ca_dir = peers.workdir / "ca"
    certs = make_certs(ca_dir, ("gw.example.org", "gw"), ("alice@example.org", "alice"))
    doc = {"engine": {"datapath": "userspace", "listen": [ADDR[side]], "secrets": "secrets.toml", **FAST_OURS},
           "pools": {"rw": {"addrs": f"{POOL_FIRST}-{POOL_LAST}", "dns": [DNS]}},
           "connections": {"t": {
               "local_addrs": [ADDR[side]], "remote_addrs": ["%any"], "proposals": [proposal],
               "local": {"auth": "pubkey", "id": "gw.example.org", "certs": ["certs/gw.crt"]},
               "remote": remote or {"auth": "eap-mschapv2", "eap_id": "%any"}, "pools": ["rw"], "mobike": False,
               "children": {"net": {"local_ts": [f"{INNER[side]}/32"], "remote_ts": ["dynamic"],
                                    "esp_proposals": ["aes256gcm16"]}}}}}
    secrets = tomli_w.dumps({"eap": {"alice": {"id": "alice", "secret": password}},
                             "private": {"me": {"file": "private/gw.key"}}})
    o = start_ours(peers, side, doc, secrets, certs_from=ca_dir, key="gw.key")
    return o, certs  # charon's files: our CA (it checks our certificate), and alice's unused ones


def _eap_client(peers, side: str, certs: dict[str, Path], password: str = EAP_PASSWORD):
    require_charon_plugins("eap-identity", "eap-mschapv2")
    gw_side = "right" if side == "left" else "left"
    conf = {"connections": {"t": {
        "version": 2, "local_addrs": ADDR[side], "remote_addrs": ADDR[gw_side],
        "proposals": "aes256gcm16-prfsha256-x25519", "vips": "0.0.0.0",
        "local": {"auth": "eap-mschapv2", "id": "alice@example.org", "eap_id": "alice"},
        "remote": {"auth": "pubkey", "id": "gw.example.org"},
        "children": {"t": {"local_ts": "dynamic", "remote_ts": f"{INNER[gw_side]}/32", "esp_proposals": "aes256gcm16"}}}},
        "secrets": {"eap-alice": {"id": "alice", "secret": f'"{password}"'}}}
    return peers.charon(side, conf, plugins=("eap-identity", "eap-mschapv2"), certs=certs)


def test_charon_eap_mschapv2_client_against_our_certificate_gateway(peers):
    """charon (auth = eap-mschapv2, checks our certificate) logs in as alice, gets a virtual IP and
    DNS, pings the host behind us; MSK-based AUTH verified both ways; same address after reconnect."""
    o, ca = _eap_gateway(peers, "right")
    c = _eap_client(peers, "left", ca)
    r = c.swanctl("--initiate", "--child", "t", "--timeout", "15", check=False)
    assert r.returncode == 0, r.stdout[-3000:]
    sas = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o)
    sa = sas[0]
    assert (sa["eap_identity"], sa["eap_method"], sa["remote_id"]) == ("alice", "EAP-MSCHAPv2", "alice@example.org")
    assert sa["virtual_ips"] == [POOL_FIRST]
    log = c.log()
    assert "authentication of 'gw.example.org' with ECDSA" in log or \
        re.search(r"authentication of 'gw.example.org' with \S+ .*successful", log), log[-3000:]
    assert "EAP method EAP_MSCHAPV2 succeeded, MSK established" in log, log[-3000:]
    assert "authentication of 'gw.example.org' with EAP successful" in log, log[-3000:]
    assert f"installing new virtual IP {POOL_FIRST}" in log
    peers.lab.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", POOL_FIRST,
                   INNER["right"], timeout=30)
    c.swanctl("--terminate", "--ike", "t", "--timeout", "10", check=False)
    wait_or_explain(lambda: not o.sas() and _pool_used(o) == 0, "our SA gone and the lease released", o)
    c.swanctl("--initiate", "--child", "t", "--timeout", "15", check=False)
    sas = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA again", o)
    assert sas[0]["virtual_ips"] == [POOL_FIRST]


def test_wrong_eap_password_is_refused_in_plain_words(peers):
    o, ca = _eap_gateway(peers, "right")
    c = _eap_client(peers, "left", ca, password="not-alice-password")
    r = c.swanctl("--initiate", "--child", "t", "--timeout", "15", check=False)
    assert r.returncode != 0
    failed = wait_or_explain(lambda: o.events("NegotiationFailed"), "NegotiationFailed", o)[0]
    assert failed["notify"] == "AUTHENTICATION_FAILED"
    assert "EAP-MSCHAPv2" in failed["reason"] and "alice" in failed["reason"] and "password" in failed["reason"], \
        failed["reason"]
    log = c.log()
    assert "EAP-MS-CHAPv2 failed with error ERROR_AUTHENTICATION_FAILURE" in log, log[-3000:]
    # charon gives up with INFORMATIONAL N(AUTH_FAILED) (§2.21.2); we answer it and drop the half-open SA
    assert re.search(r"generating INFORMATIONAL request \d+ \[ N\(AUTH_FAILED\) \]", log), log[-3000:]
    assert "received INVALID_SYNTAX" not in log and "the client gave up" in failed["reason"], failed["reason"]
    wait_or_explain(lambda: not o.sas() and _pool_used(o) == 0, "no SA and no lease left behind", o, timeout=5)


def test_our_eap_mschapv2_client_against_a_charon_gateway(peers):
    """Our daemon (local.auth = eap-mschapv2, vips) dials a charon gateway (certificate, EAP-MSCHAPv2
    users, a pool): we check its certificate, log in, get and install the address, ping through."""
    require_charon_plugins("eap-identity", "eap-mschapv2")
    ca_dir = peers.workdir / "ca"
    certs = make_certs(ca_dir, ("alice@example.org", "alice"), ("gw.example.org", "gw"))
    gw = {"connections": {"t": {
        "version": 2, "local_addrs": ADDR["right"], "remote_addrs": "%any", "pools": "rw",
        "proposals": "aes256gcm16-prfsha256-x25519",
        "local": {"auth": "pubkey", "id": "gw.example.org", "certs": "gw.crt"},
        "remote": {"auth": "eap-mschapv2", "eap_id": "%any"},
        "children": {"t": {"local_ts": f"{INNER['right']}/32", "remote_ts": "dynamic", "esp_proposals": "aes256gcm16"}}}},
        "pools": {"rw": {"addrs": f"{POOL_FIRST}-{POOL_LAST}", "dns": DNS}},
        "secrets": {"eap-alice": {"id": "alice", "secret": f'"{EAP_PASSWORD}"'}}}
    c = peers.charon("right", gw, plugins=("eap-identity", "eap-mschapv2"), certs=certs)
    doc = {"engine": {"datapath": "userspace", "listen": [ADDR["left"]], "secrets": "secrets.toml", **FAST_OURS},
           "connections": {"t": {
               "local_addrs": [ADDR["left"]], "remote_addrs": [ADDR["right"]], "vips": ["0.0.0.0"], "mobike": False,
               "proposals": ["aes256gcm16-prfsha256-x25519"],
               "local": {"auth": "eap-mschapv2", "id": "alice@example.org", "eap_id": "alice"},
               "remote": {"auth": "pubkey", "id": "gw.example.org", "cacerts": ["certs/ca.crt"]},
               "children": {"net": {"local_ts": ["dynamic"], "remote_ts": [f"{INNER['right']}/32"],
                                    "esp_proposals": ["aes256gcm16"]}}}}}
    secrets = tomli_w.dumps({"eap": {"me": {"id": "alice", "secret": EAP_PASSWORD}}})
    o = start_ours(peers, "left", doc, secrets, certs_from=ca_dir, key="alice.key")
    o.cli("initiate", "t", "--no-wait")
    sas = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o, timeout=15)
    sa = sas[0]
    assert (sa["eap_method"], sa["remote_id"], sa["virtual_ips"]) == ("EAP-MSCHAPv2", "gw.example.org", [POOL_FIRST])
    log = c.log()
    assert "EAP method EAP_MSCHAPV2 succeeded, MSK established" in log, log[-3000:]
    assert "authentication of 'alice@example.org' with EAP successful" in log, log[-3000:]
    wait_or_explain(lambda: POOL_FIRST in peers.lab.exec("left", "ip", "-o", "addr").stdout, "the address on our TUN", o)
    peers.lab.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", POOL_FIRST,
                   INNER["right"], timeout=30)


def test_charon_eap_tls_client_against_our_gateway(peers):
    """charon (auth = eap-tls with its certificate alice@example.org) against our gateway
    (remote.auth = eap-tls, our CA): TLS inside EAP, the MSK from the TLS exporter in both AUTHs,
    a virtual IP and a ping from it."""
    o, certs = _eap_gateway(peers, "right", remote={"auth": "eap-tls", "cacerts": ["certs/ca.crt"]})
    conf = {"connections": {"t": {
        "version": 2, "local_addrs": ADDR["left"], "remote_addrs": ADDR["right"],
        "proposals": "aes256gcm16-prfsha256-x25519", "vips": "0.0.0.0",
        "local": {"auth": "eap-tls", "id": "alice@example.org", "certs": "alice.crt"},
        "remote": {"auth": "pubkey", "id": "gw.example.org"},
        "children": {"t": {"local_ts": "dynamic", "remote_ts": f"{INNER['right']}/32", "esp_proposals": "aes256gcm16"}}}}}
    c = peers.charon("left", conf, plugins=("eap-identity", "eap-tls"), certs=certs)
    r = c.swanctl("--initiate", "--child", "t", "--timeout", "15", check=False)
    assert r.returncode == 0, r.stdout[-3000:]
    sa = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o)[0]
    assert (sa["eap_method"], sa["remote_id"], sa["virtual_ips"]) == ("EAP-TLS", "alice@example.org", [POOL_FIRST])
    assert "alice@example.org" in sa["cert_subject"], sa["cert_subject"]
    log = c.log()
    assert "EAP method EAP_TLS succeeded, MSK established" in log, log[-3000:]
    assert "authentication of 'gw.example.org' with EAP successful" in log, log[-3000:]
    peers.lab.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", POOL_FIRST,
                   INNER["right"], timeout=30)


# ------------------------------------------------------------------ MOBIKE (RFC 4555)
def test_charon_client_moves_with_mobike_and_the_tunnel_keeps_working(tmp_path):
    """charon (mobike = yes, vips) against our gateway; it loses its address and gets another one in
    192.0.2.0/24: it sends UPDATE_SA_ADDRESSES from there, we move the IKE and CHILD SAs without a new
    IKE SA or rekey, and a ping from its virtual IP keeps going (the ESP counters continue)."""
    with lab() as L, Peers(L, tmp_path) as peers:  # its own namespaces: the test moves an address
        c = peers.charon("left", charon_conn("left", local_addrs="%any", vips="0.0.0.0",
                                            children={"local_ts": "dynamic"}))
        policy = _gateway_policy("right", mobike=True)
        o = peers.ours("right", policy, FQDN_SECRETS)
        c.swanctl("--initiate", "--child", "t", "--timeout", "10", check=False)
        sa = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o)[0]
        assert "N(MOBIKE_SUP)" in c.log() and re.search(r"parsed IKE_AUTH response 1 \[.*N\(MOBIKE_SUP\)", c.log())
        L.exec("left", "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "2", "-I", POOL_FIRST, INNER["right"], timeout=30)
        before = wait_or_explain(lambda: (n := with_children(o)[0]["children"][0]["packets_in"]) >= 2 and n,
                                 "2 ESP packets counted", o, timeout=5)
        L.exec("left", "sysctl", "-qw", "net.ipv4.conf.veth0.promote_secondaries=1")
        L.exec("left", "ip", "addr", "add", "192.0.2.3/24", "dev", "veth0")
        L.exec("left", "ip", "addr", "del", f"{ADDR['left']}/24", "dev", "veth0")
        moved = wait_or_explain(lambda: (s := with_children(o)) and s[0]["remote_addr"] == "192.0.2.3" and s[0],
                                "our SA moved to 192.0.2.3", o, timeout=20)
        assert moved["mobike_moves"] == 1
        assert (moved["spi_i"], moved["spi_r"]) == (sa["spi_i"], sa["spi_r"])  # the same IKE SA
        log = c.log()
        assert re.search(r"generating INFORMATIONAL request \d+ \[ N\(UPD_SA_ADDR\) N\(NATD_S_IP\) N\(NATD_D_IP\) "
                         r"N\(COOKIE2\)", log), log[-3000:]
        assert re.search(r"parsed INFORMATIONAL response \d+ \[ N\(NATD_S_IP\) N\(NATD_D_IP\) N\(COOKIE2\) \]", log)
        # our return routability check at its new address (RFC 4555 §3.7) before the CHILD SA moved
        assert re.search(r"parsed INFORMATIONAL request \d+ \[ N\(COOKIE2\) \]", log), log[-3000:]
        assert re.search(r"generating INFORMATIONAL response \d+ \[ N\(COOKIE2\) \]", log), log[-3000:]
        # our CHILD SA followed the move with its SPIs (its counters go on in the datapath)...
        (ev,) = o.events("ChildSaMoved")
        assert (ev["spi_in"], ev["remote_addr"]) == (sa["children"][0]["spi_in"], "192.0.2.3")
        # ...and charon, whose kernel-libipsec cannot update an SA in place, then rekeys it (its
        # CHILD_REKEY task right after IKE_MOBIKE): a CHILD rekey, no new IKE SA.
        L.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", POOL_FIRST, INNER["right"],
               timeout=30)
        assert len(o.sas()) == 1 and before


def test_our_client_moves_with_mobike_and_keeps_its_ike_sa(tmp_path):
    """Our daemon (mobike = true, local_addrs = %any, encap = true) against charon (mobike = yes):
    our address 192.0.2.1 goes away and 192.0.2.3 comes; within a second we send
    UPDATE_SA_ADDRESSES (NAT-D, COOKIE2) from there, charon moves the IKE SA, our CHILD SA
    follows with its SPIs (ChildSaMoved, no rekey of ours) and a ping keeps going.

    charon 5.9.8 with kernel-libipsec (the only kernel interface here: this kernel has no ESP)
    cannot update an SA in place, so it then rekeys the CHILD SA itself (CHILD_REKEY after
    IKE_MOBIKE, as it logs); with XFRM it keeps it: tests/kernel/guest/test_mobike_initiator.py
    shows the same SPIs on both sides under qemu. The IKE SA stays the same either way."""
    with lab() as L, Peers(L, tmp_path) as peers:  # its own namespaces: the test moves an address
        c = peers.charon("right", charon_conn("right", remote_addrs="%any"))
        policy = tomli_w.dumps({
            "engine": {"datapath": "userspace", "secrets": "secrets.toml", **FAST_OURS},
            "connections": our_conn("left", local_addrs=["%any"], encap=True)})
        o = peers.ours("left", policy, FQDN_SECRETS)
        o.cli("initiate", "t", "--no-wait")
        sa = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o)[0]
        assert re.search(r"parsed IKE_AUTH request 1 \[.*N\(MOBIKE_SUP\)", c.log()), c.log()[-3000:]
        L.ping("left", INNER["right"], count=2)
        child = sa["children"][0]
        ike_before = charon_ike_sas(c.list_sas())
        L.exec("left", "sysctl", "-qw", "net.ipv4.conf.veth0.promote_secondaries=1")
        L.exec("left", "ip", "addr", "add", "192.0.2.3/24", "dev", "veth0")
        L.exec("left", "ip", "addr", "del", f"{ADDR['left']}/24", "dev", "veth0")
        moved = wait_or_explain(lambda: (s := with_children(o)) and s[0]["mobike_moves"] == 1 and s[0],
                                "our SA moved to 192.0.2.3", o, timeout=20)
        assert moved["local_addr"] == "192.0.2.3"
        assert (moved["spi_i"], moved["spi_r"]) == (sa["spi_i"], sa["spi_r"])  # the same IKE SA
        log = c.log()
        assert re.search(r"parsed INFORMATIONAL request \d+ \[ N\(UPD_SA_ADDR\) N\(NATD_S_IP\) N\(NATD_D_IP\) "
                         r"N\(COOKIE2\) \]", log), log[-3000:]
        assert re.search(r"generating INFORMATIONAL response \d+ \[ N\(NATD_S_IP\) N\(NATD_D_IP\) N\(COOKIE2\) \]",
                         log), log[-3000:]
        assert "remote endpoint changed from 192.0.2.1[4500] to 192.0.2.3[4500]" in log, log[-3000:]
        (ev,) = o.events("ChildSaMoved")  # our CHILD SA followed, keys and SPIs kept
        assert (ev["spi_in"], ev["spi_out"], ev["local_addr"], ev["remote_addr"], ev["encap"]) == \
            (child["spi_in"], child["spi_out"], "192.0.2.3", ADDR["right"], True)
        assert not [e for e in o.events("ExchangeSent") if e["message"]["exchange"] == "CREATE_CHILD_SA"
                    and not e["message"]["response"]]  # no rekey or new CHILD SA of ours
        L.ping("left", INNER["right"], count=3)
        listing = c.list_sas()
        assert charon_ike_sas(listing) == ike_before, listing  # the same IKE SA at charon
        assert "left.example' @ 192.0.2.3[4500]" in listing, listing
        assert len(o.sas()) == 1 and len(with_children(o)[0]["children"]) == 1


# ------------------------------------------------------------------ REDIRECT (RFC 5685)
def test_gateway_redirects_charon_to_another_gateway(peers):
    """Our gateway with redirect_to: charon (which announces REDIRECT_SUPPORTED) is authenticated,
    gets N(REDIRECT) instead of a CHILD SA, deletes the IKE SA and dials the other gateway."""
    policy = _gateway_policy("right", redirect_to="192.0.2.4")
    c = peers.charon("left", charon_conn("left", vips="0.0.0.0", children={"local_ts": "dynamic"}))
    o = peers.ours("right", policy, FQDN_SECRETS)
    c.swanctl("--initiate", "--child", "t", "--timeout", "5", check=False)
    log = wait_or_explain(lambda: "redirected" in c.log() and c.log(), "charon redirected", o, timeout=15)
    assert re.search(r"parsed IKE_SA_INIT request|generating IKE_SA_INIT request 0 \[.*N\(REDIR_SUP\)", log)
    assert re.search(r"parsed IKE_AUTH response 1 \[ IDr AUTH N\(REDIR\) \]", log), log[-3000:]
    assert "192.0.2.4" in log.split("parsed IKE_AUTH response 1", 1)[1], log[-3000:]
    answers = wait_or_explain(lambda: sent(o, "IKE_AUTH", response=True), "our IKE_AUTH answer in the events", o,
                              timeout=5)  # the event stream is written by another process
    assert "N(REDIR)" in answers[0]["message"]["payloads"], answers
    wait_or_explain(lambda: not o.sas() and _pool_used(o) == 0, "the redirected client's SA gone, no lease", o,
                    timeout=3)


def test_our_client_follows_charons_redirect_to_another_gateway(peers):
    """charon 5.9.8 has no redirect provider in Debian (no redirect in IKE_SA_INIT or IKE_AUTH;
    our client follows those against our own gateway in tests/engine/test_ike_redirect.py), but
    `swanctl --redirect` sends an established client N(REDIRECT) in an INFORMATIONAL (RFC 5685
    §5): our client starts over at 192.0.2.4 (the same charon, second address) with
    REDIRECTED_FROM, brings its CHILD SA up there and only then deletes the old IKE SA."""
    peers.lab.exec("right", "ip", "addr", "add", "192.0.2.4/24", "dev", "veth0")
    peers.callback(peers.lab.exec, "right", "ip", "addr", "del", "192.0.2.4/24", "dev", "veth0", check=False)
    c = peers.charon("right", charon_conn("right", remote_addrs="%any", local_addrs="%any"))
    policy = tomli_w.dumps({
        "engine": {"datapath": "userspace", "listen": [ADDR["left"]], "secrets": "secrets.toml", **FAST_OURS},
        "connections": our_conn("left")})
    o = peers.ours("left", policy, FQDN_SECRETS)
    o.cli("initiate", "t", "--no-wait")
    first = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o)[0]
    assert re.search(r"parsed IKE_SA_INIT request 0 \[.*N\(REDIR_SUP\)", c.log()), c.log()[-3000:]
    peers.lab.ping("left", INNER["right"], count=2)
    r = c.swanctl("--redirect", "--ike", "t", "--gateway", "192.0.2.4", check=False)
    assert r.returncode == 0, r.stdout
    new = wait_or_explain(lambda: (s := with_children(o)) and len(s) == 1 and s[0]["remote_addr"] == "192.0.2.4"
                          and s[0], "our SA at 192.0.2.4, the old one deleted", o, timeout=20)
    assert new["unique_id"] != first["unique_id"]
    log = c.log()
    assert re.search(r"generating INFORMATIONAL request \d+ \[ N\(REDIR\) \]", log), log[-3000:]
    assert "client got redirected from 192.0.2.2" in log, log[-3000:]
    assert re.search(r"parsed IKE_SA_INIT request 0 \[.*N\(REDIR_FROM\)", log), log[-3000:]
    deleted = o.events("ChildSaDeleted")
    assert deleted and "redirected to 192.0.2.4" in deleted[0]["reason"], deleted
    peers.lab.ping("left", INNER["right"], count=3)
    assert len(charon_ike_sas(c.list_sas())) == 1, c.list_sas()  # the old IKE SA is gone at charon too


def test_our_eap_tls_client_against_a_charon_gateway(peers):
    """Our daemon (local.auth = eap-tls with alice's certificate, vips) against a charon gateway
    (remote auth = eap-tls, its certificate from the same CA): TLS inside EAP both ways."""
    ca_dir = peers.workdir / "ca"
    certs = make_certs(ca_dir, ("alice@example.org", "alice"), ("gw.example.org", "gw"))
    gw = {"connections": {"t": {
        "version": 2, "local_addrs": ADDR["right"], "remote_addrs": "%any", "pools": "rw",
        "proposals": "aes256gcm16-prfsha256-x25519",
        "local": {"auth": "pubkey", "id": "gw.example.org", "certs": "gw.crt"},
        "remote": {"auth": "eap-tls", "id": "alice@example.org"},
        "children": {"t": {"local_ts": f"{INNER['right']}/32", "remote_ts": "dynamic", "esp_proposals": "aes256gcm16"}}}},
        "pools": {"rw": {"addrs": f"{POOL_FIRST}-{POOL_LAST}"}}}
    c = peers.charon("right", gw, plugins=("eap-identity", "eap-tls"), certs=certs)
    doc = {"engine": {"datapath": "userspace", "listen": [ADDR["left"]], "secrets": "secrets.toml", **FAST_OURS},
           "connections": {"t": {
               "local_addrs": [ADDR["left"]], "remote_addrs": [ADDR["right"]], "vips": ["0.0.0.0"], "mobike": False,
               "proposals": ["aes256gcm16-prfsha256-x25519"],
               "local": {"auth": "eap-tls", "id": "alice@example.org", "certs": ["certs/alice.crt"]},
               "remote": {"auth": "pubkey", "id": "gw.example.org", "cacerts": ["certs/ca.crt"]},
               "children": {"net": {"local_ts": ["dynamic"], "remote_ts": [f"{INNER['right']}/32"],
                                    "esp_proposals": ["aes256gcm16"]}}}}}
    secrets = tomli_w.dumps({"private": {"me": {"file": "private/alice.key"}}})
    o = start_ours(peers, "left", doc, secrets, certs_from=ca_dir, key="alice.key")
    o.cli("initiate", "t", "--no-wait")
    sa = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o, timeout=15)[0]
    assert (sa["eap_method"], sa["virtual_ips"]) == ("EAP-TLS", [POOL_FIRST])
    log = c.log()
    assert "EAP method EAP_TLS succeeded, MSK established" in log, log[-3000:]
    wait_or_explain(lambda: POOL_FIRST in peers.lab.exec("left", "ip", "-o", "addr").stdout, "the address on our TUN", o)
    peers.lab.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", POOL_FIRST,
                   INNER["right"], timeout=30)
