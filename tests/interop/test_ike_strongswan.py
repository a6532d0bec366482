"""Our IKEv2 engine against a real strongSwan 5.9.8 (and Libreswan 4.10) in
network namespaces. Each scenario runs in both directions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests.interop.lab import ROOT, Charon, Ours, lab, our_policy, wait_for

pytestmark = pytest.mark.interop

FAST_RETRANSMIT = "retransmit_timeout = 1\nretransmit_base = 1.4\nretransmit_tries = 3"


@pytest.fixture
def env(tmp_path):
    with lab() as L:
        started: list = []

        def charon(side="right", **kw) -> Charon:
            c = Charon(L, side, tmp_path, **kw).start()
            started.append(c)
            return c

        def ours(side="left", *, extra_args=(), **kw) -> Ours:
            o = Ours(L, side, tmp_path, our_policy(side, **kw)).start("--datapath", "none", *extra_args)
            o.watch_events()
            started.append(o)
            return o

        try:
            yield L, charon, ours
        finally:
            for x in reversed(started):
                x.stop()
            for x in started:  # shown by pytest when the test failed
                print(f"===== {x.dir.name} log (tail)\n{x.log()[-6000:]}")


def charon_spis(text: str) -> set[str]:
    return set(re.findall(r"\b(?:in|out)\s+([0-9a-f]{8})", text))


def our_spis(o: Ours) -> set[str]:
    return {f"{c[k]:08x}" for sa in o.sas() for c in sa["children"] for k in ("spi_in", "spi_out")}


def established(o: Ours) -> list[dict]:
    return [sa for sa in o.sas() if sa["state"] == "ESTABLISHED" and sa["children"]]


def bring_up(direction: str, c: Charon, o: Ours) -> None:
    if direction == "we_initiate":
        o.cli("initiate", "psk-tunnel")
    else:
        r = c.swanctl("--initiate", "--child", "psk-tunnel", "--timeout", "20", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: established(o), what="our IKE and CHILD SA")
    wait_for(lambda: "ESTABLISHED" in c.list_sas() and "INSTALLED" in c.list_sas(), what="charon's SAs")


def sides(direction: str) -> tuple[str, str]:
    """(charon side, our side): the initiator is always on the left."""
    return ("right", "left") if direction == "we_initiate" else ("left", "right")


DIRECTIONS = ["we_initiate", "charon_initiates"]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("ike,esp,expect_ike,expect_esp", [
    ("aes256gcm16-prfsha256-x25519", "aes256gcm16", "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519",
     "ESP:AES_GCM_16-256"),
    ("aes128-sha256-modp2048", "aes128-sha256", "AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
     "ESP:AES_CBC-128/HMAC_SHA2_256_128"),
], ids=["x25519-gcm256", "modp2048-cbc128-sha256"])
def test_psk_tunnel(env, direction, ike, esp, expect_ike, expect_esp):
    L, charon, ours = env
    cs, us = sides(direction)
    c = charon(cs, proposals=ike, esp_proposals=esp)
    o = ours(us, proposals=(ike,), esp=(esp,))
    bring_up(direction, c, o)
    listing = c.list_sas()
    assert expect_ike in listing and expect_esp in listing
    assert charon_spis(listing) == our_spis(o)
    sa = established(o)[0]
    assert sa["initiator"] == (direction == "we_initiate")
    assert sa["nat_remote"] and sa["remote_port"] == 4500  # libipsec fakes a NAT: we must float
    assert sa["children"][0]["encap"]
    installed = o.events("ChildSaInstalled")
    assert installed and not installed[0]["peer_is_ours"]  # charon sends no ipsec-console Vendor ID


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_invalid_ke_payload_retry(env, direction):
    L, charon, ours = env
    cs, us = sides(direction)
    if direction == "we_initiate":
        c = charon(cs, proposals="aes256gcm16-prfsha256-ecp256")
        o = ours(us, proposals=("aes256gcm16-prfsha256-x25519-ecp256",))
    else:
        c = charon(cs, proposals="aes256gcm16-prfsha256-x25519, aes256gcm16-prfsha256-ecp256")
        o = ours(us, proposals=("aes256gcm16-prfsha256-ecp256",))
    bring_up(direction, c, o)
    assert "ECP_256" in c.list_sas()
    assert established(o)[0]["ke"] == "ECP_256"
    inits = [e["message"] for e in o.events() if e["type"] in ("ExchangeSent", "ExchangeReceived")
             and e["message"]["exchange"] == "IKE_SA_INIT"]
    assert any("N(INVAL_KE)" in m["payloads"] for m in inits)
    if direction == "charon_initiates":
        assert "requested ECP_256" in c.log()


@pytest.mark.parametrize("who", ["we_rekey", "charon_rekeys"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_child_rekey(env, direction, who):
    L, charon, ours = env
    cs, us = sides(direction)
    c = charon(cs, esp_proposals="aes256gcm16-x25519")
    o = ours(us, esp=("aes256gcm16-x25519",))
    bring_up(direction, c, o)
    before = our_spis(o)
    if who == "we_rekey":
        o.cli("rekey", "psk-tunnel")
    else:
        c.swanctl("--rekey", "--child", "psk-tunnel")
    wait_for(lambda: our_spis(o) and not (our_spis(o) & before) and len(our_spis(o)) == 2, what="new CHILD SPIs")
    wait_for(lambda: charon_spis(c.list_sas()) == our_spis(o), what="charon to list the new CHILD SA only")
    child = established(o)[0]["children"][0]
    assert child["ke"] == "CURVE_25519"  # PFS on rekey
    deleted = o.events("ChildSaDeleted")
    assert deleted and deleted[-1]["reason"] == "rekeyed"


@pytest.mark.parametrize("who", ["we_rekey", "charon_rekeys"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_ike_rekey(env, direction, who):
    L, charon, ours = env
    cs, us = sides(direction)
    c = charon(cs)
    o = ours(us)
    bring_up(direction, c, o)
    old = established(o)[0]
    if who == "we_rekey":
        o.cli("rekey", "psk-tunnel", "--ike")
    else:
        c.swanctl("--rekey", "--ike", "psk-tunnel")

    def rekeyed():
        sas = o.sas()
        return len(sas) == 1 and sas[0]["spi_i"] != old["spi_i"] and sas[0]["state"] == "ESTABLISHED"

    wait_for(rekeyed, what="one new IKE SA")
    new = o.sas()[0]
    wait_for(lambda: f"{new['spi_i']:016x}" in c.list_sas() and c.list_sas().count("IKEv2") == 1,
             what="charon to list the new IKE SA only")
    assert f"{old['spi_i']:016x}" not in c.list_sas()
    assert new["children"][0]["spi_in"] == old["children"][0]["spi_in"]  # CHILD SAs move over
    # the new IKE SA carries traffic: a CHILD rekey on it works
    o.cli("rekey", "psk-tunnel")
    wait_for(lambda: our_spis(o) and charon_spis(c.list_sas()) == our_spis(o)
             and f"{old['children'][0]['spi_in']:08x}" not in our_spis(o), what="CHILD rekey on the new IKE SA")


@pytest.mark.parametrize("who", ["we_delete", "charon_deletes"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_delete(env, direction, who):
    L, charon, ours = env
    cs, us = sides(direction)
    c = charon(cs)
    o = ours(us)
    bring_up(direction, c, o)
    if who == "we_delete":
        o.cli("terminate", "psk-tunnel")
    else:
        c.swanctl("--terminate", "--ike", "psk-tunnel")
    wait_for(lambda: not o.sas(), what="our SAs to go")
    wait_for(lambda: "IKEv2" not in c.list_sas(), what="charon's SAs to go")
    states = [e["new"] for e in o.events("IkeSaStateChanged")]
    assert states[-1] == "DESTROYED"


@pytest.mark.parametrize("action", ["clear", "restart"])
def test_dpd_notices_a_killed_charon(env, action):
    L, charon, ours = env
    c = charon("right")
    o = ours("left", dpd_delay="2s", dpd_action=action, extra_engine=FAST_RETRANSMIT)
    bring_up("we_initiate", c, o)
    killed_at = time.monotonic()
    c.kill()
    # dpd_delay 2 s + retransmissions 1 + 1.4 + 1.96 + 2.74 s
    wait_for(lambda: o.events("DpdTimeout"), timeout=20, what="DpdTimeout")
    noticed = time.monotonic() - killed_at
    assert noticed < 2 + 1 + 1.4 + 1.96 + 2.74 + 2
    assert o.events("DpdTimeout")[0]["action"] == action
    if action == "clear":
        wait_for(lambda: not o.sas(), what="SAs cleared")
    else:
        wait_for(lambda: any(e["message"]["exchange"] == "IKE_SA_INIT" for e in o.events("ExchangeSent")[2:]),
                 what="re-initiation")
        c2 = charon("right")  # the peer comes back
        wait_for(lambda: established(o), timeout=40, what="restarted SA")
        assert "ESTABLISHED" in c2.list_sas()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_proposal_mismatch_names_both_lists(env, direction):
    L, charon, ours = env
    cs, us = sides(direction)
    c = charon(cs, proposals="aes128-sha256-modp2048")
    o = ours(us, proposals=("aes256gcm16-prfsha256-x25519",))
    if direction == "we_initiate":
        o.cli("initiate", "psk-tunnel", "--no-wait")  # it fails: the events tell why
    else:
        c.swanctl("--initiate", "--child", "psk-tunnel", "--timeout", "10", check=False)
    failed = wait_for(lambda: o.events("NegotiationFailed"), what="NegotiationFailed")[0]
    assert failed["notify"] == "NO_PROPOSAL_CHOSEN"
    assert any("AES_GCM_16_256" in p for p in failed["local_proposals"])
    if direction == "charon_initiates":
        assert any("AES_CBC_128" in p for p in failed["remote_proposals"])  # what charon offered
        assert "AES_CBC_128" in failed["reason"] and "AES_GCM_16_256" in failed["reason"]
    else:
        assert failed["sent_by_peer"] and "AES_GCM_16_256" in failed["reason"]
    assert "NO_PROPOSAL_CHOSEN" in c.log() or "no acceptable proposal" in c.log() or "NO_PROP" in c.log()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_child_keys_equal_charons(env, tmp_path, direction):
    """Key derivation (RFC 7296 §2.17) proven before any ESP exists."""
    L, charon, _ = env
    cs, us = sides(direction)
    c = charon(cs, esp_proposals="aes128-sha256", debug_keys=True)
    policy = tmp_path / "probe.toml"
    policy.write_text(our_policy(us, esp=("aes128-sha256",), datapath="userspace"))
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[ike.interop]\nids = ["left.example", "right.example"]\n'
                       'secret = "interop-psk-not-secret-0123456789"\n')
    secrets.chmod(0o600)
    out = tmp_path / "keys.json"
    args = [sys.executable, "-m", "tests.interop.keys_probe", str(policy), str(out), "--seconds", "6"]
    if direction == "we_initiate":
        args += ["--initiate", "psk-tunnel"]
    probe = subprocess.Popen(["ip", "netns", "exec", L.ns[us], *args], cwd=ROOT)
    try:
        if direction == "charon_initiates":
            time.sleep(1.5)
            c.swanctl("--initiate", "--child", "psk-tunnel", "--timeout", "10")
        wait_for(out.exists, what="our keys")
    finally:
        probe.wait(20)
    ours = json.loads(out.read_text())[0]
    logged = charon_keys(c.log())
    init = "out" if ours["initiator"] else "in"
    resp = "in" if ours["initiator"] else "out"
    assert logged["encryption initiator key"] == ours[f"encr_{init}"]
    assert logged["integrity initiator key"] == ours[f"integ_{init}"]
    assert logged["encryption responder key"] == ours[f"encr_{resp}"]
    assert logged["integrity responder key"] == ours[f"integ_{resp}"]
    assert len(ours["encr_out"]) == 32 and len(ours["integ_out"]) == 64  # AES-128, HMAC-SHA2-256


def charon_keys(log: str) -> dict[str, str]:
    """The CHILD SA keys charon dumps at chd level 4 ('... key => N bytes @ 0x..' + hex lines)."""
    keys: dict[str, str] = {}
    lines = log.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"((?:encryption|integrity) (?:initiator|responder) key) => (\d+) bytes", line)
        if not m:
            continue
        n = int(m.group(2))
        hexes: list[str] = []
        for follow in lines[i + 1:]:
            h = re.search(r"\s\d+: ((?:[0-9A-F]{2} ){1,16})", follow)
            if not h:
                break
            hexes += h.group(1).split()
            if len(hexes) >= n:
                break
        keys[m.group(1)] = "".join(hexes[:n]).lower()
    return keys


def test_sa_comes_up_through_30_percent_loss(env):
    L, charon, ours = env
    c = charon("right", retransmit="retransmit_timeout = 1\nretransmit_base = 1.4")
    o = ours("left", extra_engine="retransmit_timeout = 1\nretransmit_base = 1.4\nretransmit_tries = 8")
    L.loss(30)
    o.cli("initiate", "psk-tunnel", "--no-wait")  # may take longer than initiate's own timeout
    wait_for(lambda: established(o), timeout=60, what="SA through loss")
    assert "ESTABLISHED" in c.list_sas()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_libreswan_ike_sa(env, tmp_path, direction):
    from tests.interop.libreswan import Pluto, require_libreswan

    require_libreswan()
    L, _, ours = env
    cs, us = sides(direction)
    p = Pluto(L, cs, tmp_path).start()
    try:
        o = ours(us)
        if direction == "we_initiate":
            o.cli("initiate", "psk-tunnel", "--no-wait")  # the CHILD SA cannot come up
        else:
            p.whack("--initiate", "--name", "psk-tunnel", "--asynchronous")
        # Libreswan cannot install CHILD SAs without kernel ESP; the IKE SA must come up.
        wait_for(lambda: any(sa["state"] == "ESTABLISHED" for sa in o.sas()) or
                 any(e["new"] == "ESTABLISHED" for e in o.events("IkeSaStateChanged")), what="IKE SA with pluto")
        assert "established IKE SA" in p.log() or "IKE SA established" in p.log() or "ESTABLISHED_IKE_SA" in p.log()
    finally:
        p.stop()
        print(f"===== pluto log (tail)\n{p.log()[-4000:]}")
