"""RFC 8784 PPK with EAP against strongSwan 6.1: its EAP-TLS client (ppk_required) logs in to our
gateway over a hybrid x25519 + ML-KEM-768 IKE SA. charon sends PPK_IDENTITY with its MSK AUTH
after EAP-Success (ike_auth.c), verifies our first AUTH with the unmodified SK_pr and our last
one with SK_pr'; our gateway requires the PPK for this EAP connection too."""

from __future__ import annotations

import pytest
import tomli_w

from tests.interop.lab import require_strongswan6
from tests.interop.peers import ADDR, FAST_OURS, INNER, module_lab, peers, wait_or_explain, with_children  # noqa: F401
from tests.interop.test_roadwarrior import DNS, POOL_FIRST, POOL_LAST
from tests.interop.test_samples_vs_charon import make_certs, start_ours

pytestmark = pytest.mark.interop

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
PPK_ID = "pqc-ppk-eap"
PPK_HEX = "5f" * 32


def _gateway(peers, side: str, ppk_hex: str):
    ca_dir = peers.workdir / "ca"
    certs = make_certs(ca_dir, ("gw.example.org", "gw"), ("alice@example.org", "alice"))
    doc = {"engine": {"datapath": "userspace", "listen": [ADDR[side]], "secrets": "secrets.toml", **FAST_OURS},
           "pools": {"rw": {"addrs": f"{POOL_FIRST}-{POOL_LAST}", "dns": [DNS]}},
           "connections": {"t": {
               "local_addrs": [ADDR[side]], "remote_addrs": ["%any"], "proposals": [HYBRID],
               "local": {"auth": "pubkey", "id": "gw.example.org", "certs": ["certs/gw.crt"]},
               "remote": {"auth": "eap-tls", "cacerts": ["certs/ca.crt"]}, "pools": ["rw"], "mobike": False,
               "ppk_id": PPK_ID, "ppk_required": True,
               "children": {"net": {"local_ts": [f"{INNER[side]}/32"], "remote_ts": ["dynamic"],
                                    "esp_proposals": ["aes256gcm16"]}}}}}
    secrets = tomli_w.dumps({"private": {"me": {"file": "private/gw.key"}},
                             "ppk": {"one": {"id": PPK_ID, "secret": "0x" + ppk_hex}}})
    return start_ours(peers, side, doc, secrets, certs_from=ca_dir, key="gw.key"), certs


def _client(peers, certs, root):
    conf = {"connections": {"t": {
        "version": 2, "local_addrs": ADDR["left"], "remote_addrs": ADDR["right"], "proposals": HYBRID,
        "vips": "0.0.0.0", "ppk_id": PPK_ID, "ppk_required": "yes",
        "local": {"auth": "eap-tls", "id": "alice@example.org", "certs": "alice.crt"},
        "remote": {"auth": "pubkey", "id": "gw.example.org"},
        "children": {"t": {"local_ts": "dynamic", "remote_ts": f"{INNER['right']}/32", "esp_proposals": "aes256gcm16"}}}},
        "secrets": {"ppk-1": {"id": PPK_ID, "secret": "0x" + PPK_HEX}}}
    return peers.charon("left", conf, plugins=("eap-identity", "eap-tls"), certs=certs, root=root)


def test_strongswan6_eap_tls_client_with_a_required_ppk(peers):
    root = require_strongswan6()
    o, certs = _gateway(peers, "right", PPK_HEX)
    c = _client(peers, certs, root)
    r = c.swanctl("--initiate", "--child", "t", "--timeout", "20", check=False)
    assert r.returncode == 0, r.stdout[-3000:] + c.log()[-3000:]
    sa = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o)[0]
    assert sa["eap_method"] == "EAP-TLS" and sa["ppk"] and sa["quantum_safe"], sa
    log = c.log()
    assert f"using PPK for PPK_ID '{PPK_ID}'" in log, log[-3000:]
    peers.lab.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", POOL_FIRST,
                   INNER["right"], timeout=30)


@pytest.mark.parametrize("gateway_ppk", [True, False])
def test_our_eap_tls_client_with_a_ppk_against_a_strongswan6_gateway(peers, gateway_ppk):
    """The other way: our EAP-TLS client and a charon 6.1 gateway, both requiring the PPK; or our
    PPK optional and the gateway without that PPK (it takes our MSK-based NO_PPK_AUTH)."""
    root = require_strongswan6()
    ca_dir = peers.workdir / "ca"
    certs = make_certs(ca_dir, ("alice@example.org", "alice"), ("gw.example.org", "gw"))
    gw = {"connections": {"t": {
        "version": 2, "local_addrs": ADDR["right"], "remote_addrs": "%any", "pools": "rw", "proposals": HYBRID,
        **({"ppk_id": PPK_ID, "ppk_required": "yes"} if gateway_ppk else {}),
        "local": {"auth": "pubkey", "id": "gw.example.org", "certs": "gw.crt"},
        "remote": {"auth": "eap-tls", "id": "alice@example.org"},
        "children": {"t": {"local_ts": f"{INNER['right']}/32", "remote_ts": "dynamic", "esp_proposals": "aes256gcm16"}}}},
        "pools": {"rw": {"addrs": f"{POOL_FIRST}-{POOL_LAST}"}},
        # Without ours it holds another PPK: it sends USE_PPK only when it has one (ike_init.c send_use_ppk).
        "secrets": {"ppk-1": {"id": PPK_ID if gateway_ppk else "another-ppk", "secret": "0x" + PPK_HEX}}}
    c = peers.charon("right", gw, plugins=("eap-identity", "eap-tls"), certs=certs, root=root)
    doc = {"engine": {"datapath": "userspace", "listen": [ADDR["left"]], "secrets": "secrets.toml", **FAST_OURS},
           "connections": {"t": {
               "local_addrs": [ADDR["left"]], "remote_addrs": [ADDR["right"]], "vips": ["0.0.0.0"], "mobike": False,
               "proposals": [HYBRID], "ppk_id": PPK_ID, "ppk_required": gateway_ppk,
               "local": {"auth": "eap-tls", "id": "alice@example.org", "certs": ["certs/alice.crt"]},
               "remote": {"auth": "pubkey", "id": "gw.example.org", "cacerts": ["certs/ca.crt"]},
               "children": {"net": {"local_ts": ["dynamic"], "remote_ts": [f"{INNER['right']}/32"],
                                    "esp_proposals": ["aes256gcm16"]}}}}}
    secrets = tomli_w.dumps({"private": {"me": {"file": "private/alice.key"}},
                             "ppk": {"one": {"id": PPK_ID, "secret": "0x" + PPK_HEX}}})
    o = start_ours(peers, "left", doc, secrets, certs_from=ca_dir, key="alice.key")
    o.cli("initiate", "t", "--no-wait")
    sa = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o, timeout=15)[0]
    assert sa["eap_method"] == "EAP-TLS" and sa["ppk"] == gateway_ppk and sa["quantum_safe"], sa
    log = c.log()
    assert (f"using PPK for PPK_ID '{PPK_ID}'" if gateway_ppk else "using NO_PPK_AUTH notify") in log, log[-3000:]
    wait_or_explain(lambda: POOL_FIRST in peers.lab.exec("left", "ip", "-o", "addr").stdout, "the address on our TUN", o)
    peers.lab.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", POOL_FIRST,
                   INNER["right"], timeout=30)
