"""strongSwan 6.1 (ML-KEM through OpenSSL 3.5) in a namespace, from the root that
.ci/strongswan6-root builds, against our daemon (issue 11): classic, hybrid
(RFC 9370 + RFC 9242) and ML-KEM-only IKE SAs, PPKs (RFC 8784), IKE and CHILD
rekeys with IKE_FOLLOWUP_KE, each by either side, pings through every tunnel and
the CHILD SA keys compared with those charon logs."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

from tests.interop.lab import SIDES, Charon, Ours, lab, our_policy, require_strongswan6, wait_for

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


# ---------------------------------------------------------------- hybrid IKE SAs (issue 11)
DIRECTIONS = ["we_initiate", "charon_initiates"]
HYBRIDS = {
    "x25519+mlkem768": ("aes256gcm16-prfsha384-x25519-ke1_mlkem768", ["KE1_ML_KEM_768"]),
    "ecp384+mlkem1024": ("aes256gcm16-prfsha384-ecp384-ke1_mlkem1024", ["KE1_ML_KEM_1024"]),
    "x25519+mlkem768+mlkem1024": ("aes256gcm16-prfsha256-x25519-ke1_mlkem768-ke2_mlkem1024",
                                  ["KE1_ML_KEM_768", "KE2_ML_KEM_1024"]),
    "mlkem768-alone": ("aes256gcm16-prfsha256-mlkem768", ["ML_KEM_768"]),
}
PPK_ID = "pqc-ppk-1"
PPK_HEX = "5a" * 32


def _our_esp_keys(save_dir: Path) -> dict[str, str]:
    """SPI (hex) -> encryption key (hex) from our save_keys esp_sa table."""
    out = {}
    for line in (save_dir / "esp_sa").read_text().splitlines():
        fields = [f.strip('"') for f in line.split(",")]
        out[fields[3][2:].lower().zfill(8)] = fields[5][2:].lower()
    return out


SECOND_PORT = 5555
"""The second CHILD SA (test_second_child_sa_...) carries UDP between the inner addresses on this port."""


def second_child(side: str, esp: str) -> tuple[str, str]:
    """A second CHILD SA config 'second' for UDP port SECOND_PORT both ways: (our TOML for ``side``,
    charon's swanctl.conf child block for the other side)."""
    me, peer = SIDES[side]["inner"], SIDES["right" if side == "left" else "left"]["inner"]
    ours = (f'\n[connections.psk-tunnel.children.second]\nlocal_ts = ["{me}/32[udp/{SECOND_PORT}]"]\n'
            f'remote_ts = ["{peer}/32[udp/{SECOND_PORT}]"]\nesp_proposals = ["{esp}"]\n')
    # Protocol 17 by number: the strongSwan 6.1 root has no /etc/protocols for "udp".
    theirs = (f"      second {{\n        local_ts = {peer}/32[17/{SECOND_PORT}]\n"
              f"        remote_ts = {me}/32[17/{SECOND_PORT}]\n        esp_proposals = {esp}\n      }}\n")
    return ours, theirs


@contextlib.contextmanager
def tunnel(tmp_path: Path, direction: str, proposal: str, *, esp: str = "aes256gcm16", charon_extra: dict | None = None,
           our_conn: str = "", our_secrets: str = "", second: bool = False):
    """charon 6.1 (keys logged) and our daemon (keys saved), the tunnel brought up by the side
    ``direction`` names; yields (lab, charon, ours, our IKE SA as `sas --json` shows it).
    ``second``: both ends also know CHILD SA config 'second' (second_child), not started."""
    root = require_strongswan6()
    cs, us = ("right", "left") if direction == "we_initiate" else ("left", "right")
    with lab() as L:
        c = Charon(L, cs, tmp_path, root=root, proposals=proposal, esp_proposals=esp, debug_keys=True,
                   **(charon_extra or {}))
        policy = our_policy(us, proposals=(proposal,), esp=(esp,), extra_engine=f'save_keys = "{tmp_path / "keys"}"',
                            extra_conn=our_conn)
        if second:
            ours_second, charons_second = second_child(us, esp)
            policy += ours_second
            first_end = "\n      }\n    }\n  }\n}\nsecrets"
            assert c.conf.count(first_end) == 1, c.conf
            c.conf = c.conf.replace(first_end, "\n      }\n" + charons_second + "    }\n  }\n}\nsecrets")
        c.start()
        o = Ours(L, us, tmp_path, policy)
        if our_secrets:
            with open(o.dir / "secrets.toml", "a") as f:
                f.write(our_secrets)
        try:
            o.start()
            if direction == "we_initiate":
                o.cli("initiate", "psk-tunnel", "--child", "lan")
            else:
                r = c.swanctl("--initiate", "--child", "psk-tunnel", "--timeout", "20", check=False)
                assert r.returncode == 0, r.stdout + r.stderr
            sa = wait_for(lambda: [s for s in o.sas() if s["state"] == "ESTABLISHED" and s["children"]],
                          what="our IKE and CHILD SA")[0]
            wait_for(lambda: "INSTALLED" in c.list_sas(), what="charon's CHILD SA")
            yield L, c, o, sa
        finally:
            o.stop()
            c.stop()
            print(f"===== charon 6.1 log (tail)\n{c.log()[-6000:]}\n===== ours\n{o.log()[-5000:]}")


def ping_both_ways(L, c: Charon, o: Ours) -> None:
    L.ping(o.side, SIDES[c.side]["inner"], count=3, interval=0.1)
    L.ping(c.side, SIDES[o.side]["inner"], count=3, interval=0.1)


def assert_child_keys_equal_charons(c: Charon, tmp_path: Path, child: dict) -> None:
    """The encryption keys of ``child`` (our save_keys) are the last pair charon logged."""
    from tests.interop.test_ike_strongswan import charon_keys

    save = tmp_path / "keys"
    ours = wait_for(lambda: (save / "esp_sa").exists() and f"{child['spi_in']:08x}" in _our_esp_keys(save)
                    and _our_esp_keys(save), what="our saved keys")
    logged = charon_keys(c.log())
    assert {logged["encryption initiator key"], logged["encryption responder key"]} == \
        {ours[f"{child['spi_in']:08x}"], ours[f"{child['spi_out']:08x}"]}


def rekeyed(o: Ours, old: dict, key: str):
    """Our one IKE SA once ``key`` (spi_i, or a child's spi_in) differs from ``old``'s."""
    def check():
        sas = o.sas()
        if len(sas) != 1 or sas[0]["state"] != "ESTABLISHED" or len(sas[0]["children"]) != 1:
            return None
        new = sas[0] if key == "spi_i" else sas[0]["children"][0]
        return new if new[key] != old[key] else None
    return wait_for(check, what=f"the rekey ({key})")


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", list(HYBRIDS))
def test_hybrid_ike_sa_with_charon_6_1(tmp_path, direction, name):
    """IKE_SA_INIT + one IKE_INTERMEDIATE per additional ML-KEM + IKE_AUTH with IntAuth, both
    ways (ML-KEM alone: in IKE_SA_INIT); pings through the tunnel; the CHILD SA keys (from the
    updated SK_d) equal charon's."""
    proposal, names = HYBRIDS[name]
    with tunnel(tmp_path, direction, proposal) as (L, c, o, sa):
        log = c.log()
        assert re.search(r"selected proposal: IKE:\S*/" + "/".join(names) + r"\n", log), log[-3000:]
        rounds = sum(n.startswith("KE") for n in names)
        assert len(re.findall(r"(?:parsed|generating) IKE_INTERMEDIATE request \d+ \[ KE \]", log)) == rounds
        assert sa["quantum_safe"] and sa["additional_ke"] == [n for n in names if n.startswith("KE")]
        ping_both_ways(L, c, o)
        assert_child_keys_equal_charons(c, tmp_path, sa["children"][0])


# ---------------------------------------------------------------- PPK (RFC 8784)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("mode", ["required", "optional", "optional_charon_without_ppk"])
def test_ppk_with_charon_6_1(tmp_path, direction, mode):
    """USE_PPK, PPK_IDENTITY (+ NO_PPK_AUTH when optional), SK_d/SK_pi/SK_pr with the PPK: CHILD
    keys equal charon's, pings through; an optional PPK that charon lacks falls back to NO_PPK_AUTH."""
    required = mode == "required"
    charon_has_ppk = mode != "optional_charon_without_ppk"
    charon_extra = dict(conn_extra=f"ppk_id = {PPK_ID}\nppk_required = {'yes' if required else 'no'}",
                        secrets_extra=f"ppk-1 {{\n  id = {PPK_ID}\n  secret = 0x{PPK_HEX}\n}}") \
        if charon_has_ppk else {}
    with tunnel(tmp_path, direction, HYBRIDS["x25519+mlkem768"][0], charon_extra=charon_extra,
                our_conn=f'ppk_id = "{PPK_ID}"\nppk_required = {str(required).lower()}',
                our_secrets=f'\n[ppk.one]\nid = "{PPK_ID}"\nsecret = "0x{PPK_HEX}"\n') as (L, c, o, sa):
        used = f"using PPK for PPK_ID '{PPK_ID}'" in c.log()
        assert used == charon_has_ppk, c.log()[-4000:]
        assert sa["ppk"] == charon_has_ppk and sa["quantum_safe"]
        ping_both_ways(L, c, o)
        assert_child_keys_equal_charons(c, tmp_path, sa["children"][0])


# ---------------------------------------------------------------- rekeys with IKE_FOLLOWUP_KE
FOLLOWUPS = r"(?:parsed|generating) IKE_FOLLOWUP_KE request \d+ \[ (?:N\(ADD_KE\) KE|KE N\(ADD_KE\)) \]"


@pytest.mark.parametrize("who", ["we_rekey", "charon_rekeys"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_hybrid_ike_rekey_with_charon_6_1(tmp_path, direction, who):
    """An IKE rekey with two additional KEs (CREATE_CHILD_SA + 2 IKE_FOLLOWUP_KE) by either side;
    the new IKE SA carries a CHILD rekey whose keys equal charon's; pings through."""
    with tunnel(tmp_path, direction, HYBRIDS["x25519+mlkem768+mlkem1024"][0]) as (L, c, o, old):
        if who == "we_rekey":
            o.cli("rekey", "psk-tunnel", "--ike")
        else:
            c.swanctl("--rekey", "--ike", "psk-tunnel")
        new = rekeyed(o, old, "spi_i")
        wait_for(lambda: f"{new['spi_i']:016x}" in c.list_sas() and c.list_sas().count("IKEv2") == 1,
                 what="charon to list the new IKE SA only")
        assert len(re.findall(FOLLOWUPS, c.log())) == 2, c.log()[-4000:]
        assert new["additional_ke"] == ["KE1_ML_KEM_768", "KE2_ML_KEM_1024"] and new["quantum_safe"]
        o.cli("rekey", "psk-tunnel")  # a CHILD rekey on the new IKE SA: keys from its SK_d
        child = rekeyed(o, old["children"][0], "spi_in")
        wait_for(lambda: f"{child['spi_in']:08x}" in c.list_sas(), what="charon's new CHILD SA")
        ping_both_ways(L, c, o)
        assert_child_keys_equal_charons(c, tmp_path, child)


@pytest.mark.parametrize("who", ["we_rekey", "charon_rekeys"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_hybrid_child_rekey_with_charon_6_1(tmp_path, direction, who):
    """A CHILD rekey with PFS x25519 + ML-KEM-768 (CREATE_CHILD_SA + IKE_FOLLOWUP_KE) by either
    side: the new CHILD SA's keys equal charon's, pings through it."""
    esp = "aes256gcm16-x25519-ke1_mlkem768"
    with tunnel(tmp_path, direction, HYBRIDS["x25519+mlkem768"][0], esp=esp) as (L, c, o, sa):
        old = sa["children"][0]
        if who == "we_rekey":
            o.cli("rekey", "psk-tunnel")
        else:
            c.swanctl("--rekey", "--child", "psk-tunnel")
        child = rekeyed(o, old, "spi_in")
        wait_for(lambda: f"{child['spi_in']:08x}" in c.list_sas() and f"{old['spi_in']:08x}" not in c.list_sas(),
                 what="charon's new CHILD SA only")
        log = c.log()
        assert len(re.findall(FOLLOWUPS, log)) == 1, log[-4000:]
        assert re.search(r"selected proposal: ESP:\S*/CURVE_25519/\S*KE1_ML_KEM_768", log), log[-4000:]
        assert child["quantum_safe"]
        ping_both_ways(L, c, o)
        assert_child_keys_equal_charons(c, tmp_path, child)


def _udp_through_second(L, o: Ours, c: Charon, count: int = 3) -> None:
    """Datagrams from our inner address to charon's on SECOND_PORT, both ports SECOND_PORT: the
    second CHILD SA's selectors, narrower than the first's, carry them."""
    me, peer = SIDES[o.side]["inner"], SIDES[c.side]["inner"]
    code = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('{me}',{SECOND_PORT}))\n"
            f"for _ in range({count}):\n s.sendto(b'second',('{peer}',{SECOND_PORT}))\n time.sleep(0.1)\n")
    L.exec(o.side, "python3", "-c", code)


@pytest.mark.parametrize("who", ["we_create", "charon_creates"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_second_child_sa_with_additional_ke_with_charon_6_1(tmp_path, direction, who):
    """A second CHILD SA on the hybrid IKE SA, made with CREATE_CHILD_SA by either side with PFS
    x25519 + ML-KEM-768 (RFC 9370 §2.2.4: one IKE_FOLLOWUP_KE round): charon 6.1 selects the KE1
    transform, the keys equal charon's, UDP for its selectors goes through it."""
    esp = "aes256gcm16-x25519-ke1_mlkem768"
    with tunnel(tmp_path, direction, HYBRIDS["x25519+mlkem768"][0], esp=esp, second=True) as (L, c, o, sa):
        assert [k["name"] for k in sa["children"]] == ["lan"]
        if who == "we_create":
            o.cli("initiate", "psk-tunnel", "--child", "second")
        else:
            r = c.swanctl("--initiate", "--child", "second", "--timeout", "20", check=False)
            assert r.returncode == 0, r.stdout + r.stderr
        kids = wait_for(lambda: (k := {x["name"]: x for x in o.sas()[0]["children"]}) and len(k) == 2 and k,
                        what="our second CHILD SA")
        second = kids["second"]
        assert second["quantum_safe"] and second["local_ts"] == [f"{SIDES[o.side]['inner']}/32[udp/{SECOND_PORT}]"]
        wait_for(lambda: f"{second['spi_in']:08x}" in c.list_sas(), what="charon's second CHILD SA")
        log = c.log()
        assert len(re.findall(FOLLOWUPS, log)) == 1, log[-4000:]
        assert re.search(r"selected proposal: ESP:\S*/CURVE_25519/\S*KE1_ML_KEM_768", log), log[-4000:]
        assert_child_keys_equal_charons(c, tmp_path, second)
        _udp_through_second(L, o, c)
        wait_for(lambda: {x["name"]: x for x in o.sas()[0]["children"]}["second"]["packets_out"] >= 3,
                 what="3 UDP datagrams out through the second CHILD SA")
        charon_in = re.search(rf"in\s+{second['spi_out']:08x},\s+\d+ bytes,\s+(\d+) packets", c.list_sas())
        assert charon_in and int(charon_in[1]) >= 3, c.list_sas()
        ping_both_ways(L, c, o)  # the first CHILD SA still carries the rest


def test_kem_mismatch_names_both_lists_with_the_mismatch_marked(tmp_path):
    """charon 6.1 offers x25519 + ML-KEM-1024, we accept x25519 + ML-KEM-768: our NO_PROPOSAL_CHOSEN
    names both lists and the differing KE1 slot; charon's log has our refusal."""
    root = require_strongswan6()
    with lab() as L:
        c = Charon(L, "left", tmp_path, root=root, proposals="aes256gcm16-prfsha384-x25519-ke1_mlkem1024").start()
        o = Ours(L, "right", tmp_path, our_policy("right", proposals=(HYBRIDS["x25519+mlkem768"][0],)))
        try:
            o.start("--datapath", "none")
            o.watch_events()
            c.swanctl("--initiate", "--child", "psk-tunnel", "--timeout", "5", check=False)
            failed = wait_for(lambda: o.events("NegotiationFailed"), what="our NegotiationFailed")[0]
            assert failed["notify"] == "NO_PROPOSAL_CHOSEN"
            assert any("KE1_ML_KEM_1024" in p for p in failed["remote_proposals"]), failed
            assert any("KE1_ML_KEM_768" in p for p in failed["local_proposals"]), failed
            assert "peer KE1_ML_KEM_1024 <> ours KE1_ML_KEM_768" in failed["reason"], failed["reason"]
            assert "NO_PROPOSAL_CHOSEN" in c.log()
        finally:
            o.stop()
            c.stop()
            print(f"===== charon 6.1 log (tail)\n{c.log()[-3000:]}\n===== ours\n{o.log()[-3000:]}")
