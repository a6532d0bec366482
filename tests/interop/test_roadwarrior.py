"""Issue 10: road warriors against charon 5.9.8 in the namespaces: virtual IPs from pools
(configuration payloads, RFC 7296 §3.15) in both roles, traffic from the virtual IP, the
lease released on disconnect and the same address given back to the same identity."""

from __future__ import annotations

import re

import pytest
import tomli_w

from tests.interop.peers import (
    ADDR,
    FAST_OURS,
    FQDN_SECRETS,
    INNER,
    charon_conn,
    control,
    module_lab,  # noqa: F401  (fixture)
    our_conn,
    peers,  # noqa: F401  (fixture)
    wait_or_explain,
    with_children,
)

pytestmark = pytest.mark.interop

POOL_FIRST, POOL_LAST = "198.51.100.200", "198.51.100.210"
DNS = "198.51.100.53"


def _gateway_policy(side: str) -> str:
    conns = our_conn(side, remote_addrs=["%any"], pools=["rw"], mobike=False,
                     children={"remote_ts": ["dynamic"]})
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
