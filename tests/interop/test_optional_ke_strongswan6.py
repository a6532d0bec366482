"""Optional additional key exchanges (RFC 9370 §2.2.1: NONE among an ADDITIONAL_KEY_EXCHANGE
type's transforms) against strongSwan 6.1. charon leaves a type it chose NONE for out of its
answer (proposal.c select_algos skips an algorithm 0): our initiator offering optional ML-KEM to
a classic charon must take that as NONE and set up a classic IKE SA. And a method is not
chosen twice (proposal.c select_algo): charon refuses an answer that does."""

from __future__ import annotations

import pytest

from tests.interop.lab import Charon, Ours, lab, our_policy, require_strongswan6, wait_for

pytestmark = pytest.mark.interop

CLASSIC = "aes256gcm16-prfsha384-x25519"
OPTIONAL = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none"


@pytest.mark.parametrize("direction", ["we_initiate", "charon_initiates"])
def test_optional_ml_kem_against_a_classic_strongswan6(tmp_path, direction):
    root = require_strongswan6()
    theirs, ours = (CLASSIC, OPTIONAL) if direction == "we_initiate" else (OPTIONAL, CLASSIC)
    with lab() as L:
        c = Charon(L, "right", tmp_path, root=root, proposals=theirs).start()
        o = Ours(L, "left", tmp_path, our_policy("left", proposals=(ours,)))
        try:
            o.start("--datapath", "none")
            if direction == "we_initiate":
                o.cli("initiate", "psk-tunnel")
            else:
                r = c.swanctl("--initiate", "--ike", "psk-tunnel", "--timeout", "20", check=False)
                assert r.returncode == 0, r.stdout + r.stderr
            sa = wait_for(lambda: [s for s in o.sas() if s["state"] == "ESTABLISHED"], what="our IKE SA")[0]
            assert sa["ke"] == "CURVE_25519" and not sa["additional_ke"] and not sa["quantum_safe"], sa
            log = c.log()
            assert "IKE_SA psk-tunnel[1] established" in log and "IKE_INTERMEDIATE" not in log, log[-3000:]
        finally:
            o.stop()
            c.stop()
            print(f"===== charon 6.1 log (tail)\n{c.log()[-4000:]}\n===== ours\n{o.log()[-4000:]}")


def test_charon_initiator_gets_no_method_chosen_twice(tmp_path):
    """charon offers x25519 first for the primary KE and for ADDITIONAL_KEY_EXCHANGE_1 (then
    ML-KEM-768); our answer must take ML-KEM-768 for KE1, not x25519 again."""
    root = require_strongswan6()
    proposal = "aes256gcm16-prfsha384-x25519-ke1_x25519-ke1_mlkem768"
    with lab() as L:
        c = Charon(L, "right", tmp_path, root=root, proposals=proposal).start()
        o = Ours(L, "left", tmp_path, our_policy("left", proposals=(proposal,)))
        try:
            o.start("--datapath", "none")
            r = c.swanctl("--initiate", "--ike", "psk-tunnel", "--timeout", "20", check=False)
            assert r.returncode == 0, r.stdout + r.stderr
            sa = wait_for(lambda: [s for s in o.sas() if s["state"] == "ESTABLISHED"], what="our IKE SA")[0]
            assert sa["ke"] == "CURVE_25519" and sa["additional_ke"] == ["KE1_ML_KEM_768"], sa
        finally:
            o.stop()
            c.stop()
            print(f"===== charon 6.1 log (tail)\n{c.log()[-4000:]}\n===== ours\n{o.log()[-4000:]}")
