"""Issue 10 with issue 11's key exchange: strongSwan 6.1 (ML-KEM through OpenSSL 3.5, from the
root .ci/strongswan6-root builds) as an EAP-TLS road-warrior client of our gateway over a hybrid
x25519 + ML-KEM-768 IKE SA: EAP rounds in IKE_AUTH after IKE_INTERMEDIATE, both MSK AUTHs
covering the intermediate round (RFC 9242 §3.3.2), a virtual IP and a ping from it.
(strongSwan 6.1's root has no eap-mschapv2 plugin; EAP-MSCHAPv2 after IKE_INTERMEDIATE is
tested between our own endpoints in tests/engine/test_ike_eap_intermediate.py.)"""

from __future__ import annotations

import pytest

from tests.interop.lab import require_strongswan6
from tests.interop.peers import ADDR, INNER, module_lab, peers, wait_or_explain, with_children  # noqa: F401
from tests.interop.test_roadwarrior import POOL_FIRST, _eap_gateway

pytestmark = pytest.mark.interop

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"


def test_strongswan6_eap_tls_client_over_a_hybrid_ike_sa(peers):
    root = require_strongswan6()
    o, certs = _eap_gateway(peers, "right", remote={"auth": "eap-tls", "cacerts": ["certs/ca.crt"]},
                            proposal=HYBRID)
    conf = {"connections": {"t": {
        "version": 2, "local_addrs": ADDR["left"], "remote_addrs": ADDR["right"], "proposals": HYBRID,
        "vips": "0.0.0.0",
        "local": {"auth": "eap-tls", "id": "alice@example.org", "certs": "alice.crt"},
        "remote": {"auth": "pubkey", "id": "gw.example.org"},
        "children": {"t": {"local_ts": "dynamic", "remote_ts": f"{INNER['right']}/32", "esp_proposals": "aes256gcm16"}}}}}
    c = peers.charon("left", conf, plugins=("eap-identity", "eap-tls"), certs=certs, root=root)
    r = c.swanctl("--initiate", "--child", "t", "--timeout", "20", check=False)
    assert r.returncode == 0, r.stdout[-3000:]
    sa = wait_or_explain(lambda: with_children(o), "our IKE and CHILD SA", o)[0]
    assert (sa["eap_method"], sa["remote_id"], sa["virtual_ips"]) == ("EAP-TLS", "alice@example.org", [POOL_FIRST])
    assert sa["quantum_safe"] and sa["additional_ke"] == ["KE1_ML_KEM_768"], sa
    log = c.log()
    assert "strongSwan 6." in log
    assert "parsed IKE_INTERMEDIATE response 1" in log, log[-3000:]
    assert "EAP method EAP_TLS succeeded, MSK established" in log, log[-3000:]
    assert "authentication of 'gw.example.org' with EAP successful" in log, log[-3000:]
    peers.lab.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", POOL_FIRST,
                   INNER["right"], timeout=30)
