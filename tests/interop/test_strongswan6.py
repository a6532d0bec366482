"""strongSwan 6.1 (ML-KEM through OpenSSL 3.5) in a namespace, from the root that
.ci/strongswan6-root builds: it runs, offers ML-KEM, and answers our daemon with
a classic proposal. Hybrid proposals need the IKE_INTERMEDIATE exchange (issue 11)."""

from __future__ import annotations

import pytest

from tests.interop.lab import Charon, Ours, lab, our_policy, require_strongswan6, wait_for

pytestmark = pytest.mark.interop


def test_strongswan6_lists_ml_kem(tmp_path):
    root = require_strongswan6()
    with lab() as L:
        c = Charon(L, "right", tmp_path, root=root).start()
        try:
            algs = c.swanctl("--list-algs").stdout
            assert "ML_KEM_768[openssl]" in algs and "ML_KEM_1024[openssl]" in algs, algs
            assert "strongSwan 6." in c.log()  # really the root's charon, not Debian 12's 5.9.8
        finally:
            c.stop()


def test_strongswan6_answers_our_classic_ike_sa_init(tmp_path):
    root = require_strongswan6()
    with lab() as L:
        c = Charon(L, "right", tmp_path, root=root, proposals="aes256gcm16-prfsha384-x25519").start()
        o = Ours(L, "left", tmp_path, our_policy("left", proposals=("aes256gcm16-prfsha384-x25519",)))
        try:
            o.start("--datapath", "none")
            o.cli("initiate", "psk-tunnel")
            sa = wait_for(lambda: [s for s in o.sas() if s["state"] == "ESTABLISHED"], what="our IKE SA")[0]
            assert (sa["encr"], sa["prf"], sa["ke"]) == ("AES_GCM_16_256", "PRF_HMAC_SHA2_384", "CURVE_25519")
            log = c.log()
            assert "strongSwan 6.1" in log
            assert "parsed IKE_SA_INIT request 0" in log and "IKE_SA psk-tunnel[1] established" in log, log[-3000:]
        finally:
            o.stop()
            c.stop()
            print(f"===== charon 6.1 log (tail)\n{c.log()[-4000:]}\n===== ours\n{o.log()[-4000:]}")


def test_our_key_derivation_matches_a_fresh_charon_6_1_pair(tmp_path):
    """Two charon 6.1 (hybrid x25519 + ML-KEM-768 + ML-KEM-1024, required PPK, CHILD and IKE
    rekeys): every key they log is recomputed by engine.crypto from their logged inputs."""
    root = require_strongswan6()
    from tests.engine.test_pq_strongswan_vectors import verify
    from tests.interop.strongswan6_vectors import extract, run

    log, spis = run(tmp_path, root)
    verify(extract(log, spis))
