"""Issue 16: every shipped sample policy (sample-configs/), moved onto the lab's
namespace addresses, brings up its tunnel against charon 5.9.8 — not only
`check`. Each sample is used as a new user would: its own file, its own secrets
file (or certificates made with `ipsec-console pki`, as its comments say), the
datapath switched to "userspace" because this kernel has no ESP, and charon set
up as the mirror image the sample's comments describe.

Quantum-safe samples (issue 11): each sample offers the hybrid proposal
(x25519 + ML-KEM-768, RFC 9370) first. Where its peer may be older, a classic
proposal follows, and charon 5.9.8 (which cannot even parse `ke1_`) is given
the sample's classic proposals only and must pick one of ours that it knows
(RFC 7296 §3.3.6: a proposal with an unknown transform type is skipped);
strongSwan 6.1 (from .ci/strongswan6-root) gets the whole list and must choose
the hybrid one. host-to-host-transport.toml is hybrid only (both hosts run it):
it is tested against strongSwan 6.1.

The lab samples (lab*.toml) are left out: they describe the in-process lab on
loopback (datapath "lab", peers that are other ipsec-console endpoints on
127.0.0.x with unprivileged ports), there is no charon in that picture.

charon here is kernel-libipsec (no kernel ESP on this VM): tunnel mode only. For
the transport-mode samples the IKE SA and the transport CHILD SA are negotiated
with charon and we install ours; charon then cannot install its half
('unsupported mode'), so no packet can flow to it: the test checks everything
up to that point and says so. Where charon's remote selector holds our IKE
address (road warriors without virtual IPs), Peers.route_ike_around_libipsec
lets libipsec carry it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from engine.policy.samples import sample_dir, sample_names
from tests.interop.lab import ROOT, require_charon_plugins, require_strongswan6
from tests.interop.peers import (
    ADDR,
    FAST_OURS,
    INNER,
    charon_ike_sas,
    established,
    module_lab,  # noqa: F401  (fixture)
    other,
    peers,  # noqa: F401  (fixture)
    psk_secret,
    sent,
    wait_or_explain,
    with_children,
)

pytestmark = pytest.mark.interop

EXCLUDED = {
    "lab.toml": "the in-process lab on loopback (datapath 'lab'); its peers are ipsec-console endpoints",
    "lab-branch.toml": "a peer of the in-process lab (loopback, datapath 'lab')",
    "lab-roadwarrior.toml": "a deliberately misconfigured peer of the in-process lab (loopback, datapath 'lab')",
}
TESTED = ["site-to-site.toml", "road-warrior-server.toml", "road-warrior-client.toml",
          "host-to-host-transport.toml", "server-least-privilege.toml"]


def test_every_sample_is_tested_or_excluded_with_a_reason():
    """A new sample must get a test here (or a stated reason): this fails until it does."""
    assert sorted(TESTED + list(EXCLUDED)) == sample_names()


# ------------------------------------------------------------------ moving a sample into the lab
def load_sample(name: str, moves: dict[str, str]) -> dict:
    """The sample's TOML with its addresses moved (exact string values only) and the kernel
    datapath, which this VM lacks, replaced by the userspace one."""
    text = (sample_dir() / name).read_text()
    for old, new in moves.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    doc = tomllib.loads(text)
    assert doc["engine"]["datapath"] in ("kernel", "userspace")
    doc["engine"]["datapath"] = "userspace"
    doc["engine"].update(FAST_OURS)  # short retransmissions: a failure shows in seconds, not minutes
    return doc


def classic(proposals: list[str]) -> str:
    """The proposals charon 5.9.8 can parse (no RFC 9370 ``keN_`` transforms), as its config wants them."""
    kept = [p for p in proposals if not re.search(r"-ke[1-7]_", p)]
    assert kept, f"no classic fallback in {proposals}"
    return ", ".join(kept)


def quantum_safe(sa: dict) -> tuple[bool, list[str]]:
    return sa["quantum_safe"], sa["additional_ke"]


def pki(workdir: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "console", "pki", *args, "--dir", str(workdir)], cwd=ROOT, check=True,
                   capture_output=True, text=True)


def make_certs(workdir: Path, server: tuple[str, str], client: tuple[str, str]) -> dict[str, Path]:
    """A CA with ``ipsec-console pki`` (as the samples' comments say) in a new folder ``workdir``,
    a server certificate named server[1] for CN server[0] and a client one; files laid out as the
    samples expect (certs/NAME.crt, certs/ca.crt, private/NAME.key). charon gets the client's."""
    workdir.mkdir()
    pki(workdir, "init-ca", "O=Interop Lab, CN=Sample CA")
    pki(workdir, "issue", server[0], "--name", server[1])
    pki(workdir, "issue", client[0], "--name", client[1], "--client")
    shutil.copy(workdir / "ca.crt", workdir / "certs" / "ca.crt")
    return {"ca": workdir / "ca.crt", "cert": workdir / "certs" / f"{client[1]}.crt",
            "key": workdir / "private" / f"{client[1]}.key"}


def start_ours(peers, side: str, doc: dict, secrets: str | None, certs_from: Path | None = None,
               key: str | None = None):
    """Our daemon running the moved sample. The policy's relative paths (secrets, certs) resolve in
    the daemon's folder, so the sample's layout is recreated there (certs/ and our own private key
    ``key``, not the CA's)."""
    def prepare(folder: Path) -> None:
        if secrets is not None:
            target = folder / doc["engine"]["secrets"]
            target.write_text(secrets)
            target.chmod(0o600)
        if certs_from is not None:
            shutil.copytree(certs_from / "certs", folder / "certs")
            (folder / "private").mkdir(mode=0o700)
            shutil.copy(certs_from / "private" / key, folder / "private" / key)
    return peers.ours(side, tomli_w.dumps(doc), None, prepare=prepare)


def pubkey_charon(side: str, name: str, me: tuple[str, str], peer_id: str, proposals: str, child: dict,
                  remote_addrs: str | None = None) -> dict:
    """charon's swanctl.conf tree for a certificate peer: ``me`` is (id, certificate file)."""
    return {"connections": {name: {
        "version": 2, "local_addrs": ADDR[side], "remote_addrs": remote_addrs or ADDR[other(side)],
        "proposals": proposals, "local": {"auth": "pubkey", "id": me[0], "certs": me[1]},
        "remote": {"auth": "pubkey", "id": peer_id}, "children": {name: child}}}}


def charon_log_child(c) -> list[str]:
    return re.findall(r".*(?:CHILD_SA \S+ established|unsupported mode|unable to install|NO_PROP|"
                      r"received \w+ notify).*", c.log())


# ------------------------------------------------------------------ site-to-site.toml
@pytest.mark.parametrize("direction", [
    "trap_on_our_side",
    "we_initiate", "charon_initiates",
    "we_initiate_to_strongswan6", "strongswan6_initiates"])
def test_site_to_site(peers, direction):
    """hq (us, 192.0.2.1, LAN 198.51.100.0/25) and branch (charon, 192.0.2.2, 198.51.100.128/25),
    FQDN ids, PSK from the sample's secrets file, start_action = "trap": our first packet to the
    branch LAN brings the tunnel up. A branch on charon 5.9.8 negotiates the classic fallback,
    one on strongSwan 6.1 the hybrid first proposal."""
    six = "strongswan6" in direction
    doc = load_sample("site-to-site.toml", {})
    secrets = (sample_dir() / "site-to-site.secrets.toml").read_text()
    psk = tomllib.loads(secrets)["ike"]["branch"]["secret"]
    conn = doc["connections"]["branch"]
    c = peers.charon("right", {"connections": {"hq": {
        "version": 2, "local_addrs": ADDR["right"], "remote_addrs": ADDR["left"],
        "proposals": ", ".join(conn["proposals"]) if six else classic(conn["proposals"]),
        "dpd_delay": "30s", "rekey_time": "4h",
        "local": {"auth": "psk", "id": "branch.example.org"}, "remote": {"auth": "psk", "id": "hq.example.org"},
        "children": {"lan": {"local_ts": "198.51.100.128/25", "remote_ts": "198.51.100.0/25",
                             "esp_proposals": "aes256gcm16-x25519", "rekey_time": "1h"}}}},
        "secrets": {"ike-branch": psk_secret("branch.example.org", "hq.example.org", secret=psk)}},
        root=require_strongswan6() if six else None)
    o = start_ours(peers, "left", doc, secrets)
    if direction == "trap_on_our_side":
        # The first packets are held or dropped while IKE runs; the later ones must pass.
        out = peers.lab.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.5", "-W", "1", "-I", INNER["left"],
                             INNER["right"], check=False)
        wait_or_explain(lambda: sent(o, "IKE_SA_INIT"), f"an IKE_SA_INIT started by our first packet (ping: "
                        f"{(out.stdout + out.stderr).strip()[-200:]})", o, timeout=5)
    elif direction.startswith("we_initiate"):
        o.cli("initiate", "branch", "--no-wait")
    else:
        r = c.swanctl("--initiate", "--child", "lan", "--timeout", "10", check=False)
        assert r.returncode == 0, r.stdout[-2000:]
    wait_or_explain(lambda: with_children(o), "the site-to-site tunnel", o)
    sa = established(o)[0]
    assert (sa["local_id"], sa["remote_id"]) == ("hq.example.org", "branch.example.org")
    assert sa["initiator"] == direction.startswith(("we_initiate", "trap"))
    child = sa["children"][0]
    assert (child["local_ts"], child["remote_ts"]) == (["198.51.100.0/25"], ["198.51.100.128/25"])
    listing = c.list_sas()
    assert "AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519" in listing
    if six:  # (the host's swanctl 5.9.8 lists no KEn: charon's log names the choice)
        assert quantum_safe(sa) == (True, ["KE1_ML_KEM_768"]) and child["quantum_safe"], sa
        assert re.search(r"selected proposal: IKE:\S*/CURVE_25519/KE1_ML_KEM_768\n", c.log()), c.log()[-3000:]
    else:
        assert quantum_safe(sa) == (False, []), sa
    peers.lab.ping("left", INNER["right"], count=3, interval=0.2)
    peers.lab.ping("right", INNER["left"], count=3, interval=0.2)


# ------------------------------------------------------------------ road-warrior-server.toml
SAMPLE_EAP_PASSWORD = "Example-only: a long passphrase, not this one"
"""alice@example.org's password in the road-warrior samples' secrets files."""


def sample_secrets(name: str, private: str | None = None) -> str:
    """The sample's own secrets file (its EAP users), plus our certificate's private key where
    certificate authentication needs it (the sample does not say where it goes)."""
    text = (sample_dir() / name).read_text()
    return text + (f'\n[private.me]\nfile = "private/{private}"\n' if private else "")


def test_road_warrior_server(peers):
    """The gateway (us, 192.0.2.1, remote_addrs %any: it only responds, certificate gw.example.org,
    EAP-MSCHAPv2 users, pool 198.51.100.128/25) and a laptop (charon, 192.0.2.2) logging in as
    alice@example.org with vips = 0.0.0.0: it gets the pool's first address and reaches the office
    network 198.51.100.0/25 from it."""
    require_charon_plugins("eap-identity", "eap-mschapv2")
    doc = load_sample("road-warrior-server.toml", {})
    ca_dir = peers.workdir / "ca"
    certs = make_certs(ca_dir, ("gw.example.org", "gw"), ("alice@example.org", "alice"))
    conf = {"connections": {"office": {
        "version": 2, "local_addrs": ADDR["right"], "remote_addrs": ADDR["left"], "vips": "0.0.0.0",
        "proposals": "aes256gcm16-prfsha256-x25519",
        "local": {"auth": "eap-mschapv2", "id": "alice@example.org", "eap_id": "alice@example.org"},
        "remote": {"auth": "pubkey", "id": "gw.example.org"},
        "children": {"office": {"local_ts": "dynamic", "remote_ts": "198.51.100.0/25", "esp_proposals": "aes256gcm16"}}}},
        "secrets": {"eap-alice": {"id": "alice@example.org", "secret": f'"{SAMPLE_EAP_PASSWORD}"'}}}
    c = peers.charon("right", conf, plugins=("eap-identity", "eap-mschapv2"), certs=certs)
    o = start_ours(peers, "left", doc, sample_secrets("road-warrior-server.secrets.toml", "gw.key"),
                   certs_from=ca_dir, key="gw.key")
    r = c.swanctl("--initiate", "--child", "office", "--timeout", "15", check=False)
    assert r.returncode == 0, r.stdout[-2500:]
    wait_or_explain(lambda: with_children(o), "the road-warrior tunnel", o)
    sa = established(o)[0]
    assert (sa["local_id"], sa["remote_id"], sa["eap_identity"]) == ("gw.example.org", "alice@example.org",
                                                                     "alice@example.org")
    vip = sa["virtual_ips"][0]
    assert vip == "198.51.100.129"  # the first address of the pool 198.51.100.128/25
    child = sa["children"][0]
    assert (child["local_ts"], child["remote_ts"]) == (["198.51.100.0/25"], [f"{vip}/32"])
    # the laptop reaches the office from its virtual IP, through the tunnel
    out = peers.lab.exec("right", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", vip,
                         INNER["left"], check=False)
    assert " 0% packet loss" in out.stdout, out.stdout + "\n" + c.list_sas()
    wait_or_explain(lambda: with_children(o)[0]["children"][0]["packets_in"] >= 3, "3 ESP packets counted", o,
                    timeout=5)  # our counters are read once a second


# ------------------------------------------------------------------ road-warrior-client.toml
def test_road_warrior_client(peers):
    """The laptop (us, 192.0.2.2, start_action start, EAP-MSCHAPv2 as alice@example.org, vips) dials
    the gateway (charon, 192.0.2.1, certificate gw.example.org, office 198.51.100.0/25, a pool):
    we check its certificate, get an address, put it on our TUN device and reach the office from it."""
    require_charon_plugins("eap-identity", "eap-mschapv2")
    doc = load_sample("road-warrior-client.toml", {})
    ca_dir = peers.workdir / "ca"
    certs = make_certs(ca_dir, ("alice@example.org", "alice"), ("gw.example.org", "gw"))
    gw = pubkey_charon("left", "office", ("gw.example.org", "gw.crt"), "alice@example.org",
                       "aes256gcm16-prfsha256-x25519",
                       {"local_ts": "198.51.100.0/25", "remote_ts": "dynamic", "esp_proposals": "aes256gcm16"},
                       remote_addrs="%any")
    office = gw["connections"]["office"]
    office["remote"] = {"auth": "eap-mschapv2", "eap_id": "%any"}
    office["pools"] = "rw"
    gw["pools"] = {"rw": {"addrs": "198.51.100.200-198.51.100.210"}}
    gw["secrets"] = {"eap-alice": {"id": "alice@example.org", "secret": f'"{SAMPLE_EAP_PASSWORD}"'}}
    c = peers.charon("left", gw, plugins=("eap-identity", "eap-mschapv2"), certs=certs)
    o = start_ours(peers, "right", doc, sample_secrets("road-warrior-client.secrets.toml"),
                   certs_from=ca_dir, key="alice.key")
    wait_or_explain(lambda: with_children(o), "the laptop's tunnel (start_action = start)", o, timeout=15)
    sa = established(o)[0]
    assert sa["initiator"] and (sa["local_id"], sa["remote_id"]) == ("alice@example.org", "gw.example.org")
    # We offered the hybrid proposal first: charon 5.9.8 skipped it (an unknown transform type)
    # and took the classic one after it.
    assert quantum_safe(sa) == (False, []) and sa["prf"] == "PRF_HMAC_SHA2_256", sa
    assert sa["virtual_ips"] == ["198.51.100.200"] and sa["eap_method"] == "EAP-MSCHAPv2"
    child = sa["children"][0]
    assert (child["local_ts"], child["remote_ts"]) == (["198.51.100.200/32"], ["198.51.100.0/25"])
    wait_or_explain(lambda: "198.51.100.200" in peers.lab.exec("right", "ip", "-o", "addr").stdout,
                    "the virtual IP on our TUN device", o)
    out = peers.lab.exec("right", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", "198.51.100.200",
                         INNER["left"], check=False)
    assert " 0% packet loss" in out.stdout, out.stdout + "\n" + c.list_sas()
    wait_or_explain(lambda: with_children(o)[0]["children"][0]["packets_in"] >= 3, "3 ESP packets counted", o,
                    timeout=5)


# ------------------------------------------------------------------ host-to-host-transport.toml
@pytest.mark.parametrize("direction", [
    "we_initiate",
    "charon_initiates",
])
def test_host_to_host_transport(peers, direction):
    """192.0.2.10/.20 moved to 192.0.2.1 (us) / 192.0.2.2 (strongSwan 6.1: the sample is hybrid
    only, x25519 + ML-KEM-768); IP-address identities, transport mode with dynamic selectors, PSK
    from the sample's secrets file. charon (libipsec) cannot install transport mode: the IKE SA and
    the transport CHILD SA are negotiated, our half is installed, and charon's refusal is its
    kernel's, seen in its log."""
    moves = {"192.0.2.10": ADDR["left"], "192.0.2.20": ADDR["right"]}
    doc = load_sample("host-to-host-transport.toml", moves)
    secrets = (sample_dir() / "host-to-host-transport.secrets.toml").read_text()
    for old, new in moves.items():
        secrets = secrets.replace(f'"{old}"', f'"{new}"')
    if direction == "charon_initiates":
        doc["connections"]["peer"]["children"]["hosts"]["start_action"] = "none"
    psk = tomllib.loads(secrets)["ike"]["peer"]["secret"]
    conn = doc["connections"]["peer"]
    c = peers.charon("right", {"connections": {"peer": {
        "version": 2, "local_addrs": ADDR["right"], "remote_addrs": ADDR["left"],
        "proposals": ", ".join(conn["proposals"]), "local": {"auth": "psk"}, "remote": {"auth": "psk"},
        "children": {"hosts": {"mode": "transport", "esp_proposals": "aes256gcm16-x25519"}}}},
        "secrets": {"ike-peer": psk_secret(ADDR["left"], ADDR["right"], secret=f"{psk}")}},
        root=require_strongswan6())
    o = start_ours(peers, "left", doc, secrets)
    if direction == "charon_initiates":
        c.swanctl("--initiate", "--child", "hosts", "--timeout", "10", check=False)
        child = wait_or_explain(lambda: o.events("ChildSaInstalled"), "our transport CHILD SA", o)[0]
        assert child["mode"] == "transport"
        assert (child["local_ts"], child["remote_ts"]) == ([f"{ADDR['left']}/32"], [f"{ADDR['right']}/32"])
    else:
        # start_action = "start": up by itself; charon answers the CHILD with NO_PROPOSAL_CHOSEN
        # because it cannot install transport mode.
        wait_or_explain(lambda: established(o), "our IKE SA with charon", o)
    wait_or_explain(lambda: "unsupported mode" in c.log(), "charon's libipsec refusing transport mode", o)
    assert re.search(r"selected proposal: ESP:AES_GCM_16_256", c.log()), charon_log_child(c)
    sa = established(o)[0]
    assert (sa["local_id"], sa["remote_id"]) == (ADDR["left"], ADDR["right"])
    assert quantum_safe(sa) == (True, ["KE1_ML_KEM_768"]), sa
    assert [s[1] for s in charon_ike_sas(c.list_sas())] == ["ESTABLISHED"]


# ------------------------------------------------------------------ server-least-privilege.toml
@pytest.mark.parametrize("client", ["charon", "strongswan6"])
def test_server_least_privilege(peers, client):
    """The server (us, 192.0.2.1) and a client (charon, 192.0.2.2 in 192.0.2.0/24) with a certificate
    laptop.clients.example.org from our CA; transport mode for HTTPS and SSH only. The selectors with
    ports are narrowed to the client and the IKE SA and CHILD SA are negotiated; charon (libipsec)
    cannot install transport mode. A strongSwan 6.1 client offering the sample's proposals gets the
    hybrid one, charon 5.9.8 (given the classic one) the fallback."""
    six = client == "strongswan6"
    doc = load_sample("server-least-privilege.toml", {})
    doc["engine"]["secrets"] = "secrets.toml"
    ca_dir = peers.workdir / "ca"
    certs = make_certs(ca_dir, ("server.example.org", "server"), ("laptop.clients.example.org", "laptop"))
    proposals = doc["connections"]["clients"]["proposals"]
    # Protocols by number: the strongSwan 6.1 root has no /etc/protocols.
    c = peers.charon("right", pubkey_charon(
        "right", "services", ("laptop.clients.example.org", "laptop.crt"), "server.example.org",
        ", ".join(proposals) if six else classic(proposals),
        {"mode": "transport", "local_ts": "dynamic[6]", "esp_proposals": "aes256gcm16",
         "remote_ts": f"{ADDR['left']}/32[6/443], {ADDR['left']}/32[6/22]"}), certs=certs,
        root=require_strongswan6() if six else None)
    o = start_ours(peers, "left", doc, '[private.server]\nfile = "private/server.key"\n', certs_from=ca_dir,
                   key="server.key")
    c.swanctl("--initiate", "--child", "services", "--timeout", "10", check=False)
    child = wait_or_explain(lambda: o.events("ChildSaInstalled"), "our transport CHILD SA", o)[0]
    sa = established(o)[0]
    assert (sa["local_id"], sa["remote_id"]) == ("server.example.org", "laptop.clients.example.org")
    assert child["mode"] == "transport"
    assert sorted(child["local_ts"]) == sorted([f"{ADDR['left']}/32[tcp/443]", f"{ADDR['left']}/32[tcp/22]"])
    assert child["remote_ts"] == [f"{ADDR['right']}/32[tcp]"]
    assert "unsupported mode" in c.log(), charon_log_child(c)  # libipsec's limit, not ours
    assert quantum_safe(sa) == ((True, ["KE1_ML_KEM_768"]) if six else (False, [])), sa
