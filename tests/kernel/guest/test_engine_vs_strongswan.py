"""Our daemon with the kernel datapath against strongSwan's charon (its
kernel-netlink backend) in two namespaces of the guest, whose kernel has ESP
and AH: ESP tunnel and transport, AH tunnel and transport, initiated by
either side; then ours against ours.

Each scenario proves the traffic really went through IPsec: ping gets its
replies, the SAs in both namespaces counted exactly those packets, and no
XFRM error counter moved. And that the SAs are the ones negotiated: the
keys in our namespace's ``ip xfrm state`` are the keys our engine derived
(tests.kernel.keys_daemon records them; the product never exports keys),
and equal those charon installed in its namespace; our SAs and policies
carry our reqid/priority tag.

Cost: one charon and two daemons for the whole module, started together
(a daemon's imports take seconds under emulation), one IKE SA per scenario.
"""

from __future__ import annotations

import time

import pytest

from engine.datapath.kernel_policy import is_our_reqid
from tests.kernel.hostns import our_policies

from .checks import check_ping, check_sas, flush_xfrm, spd_entries
from .lab import Lab, sh
from .peers import Charon, Conn, Ours, swanctl_conf, wait_for, xfrm_states

CONNS = [
    Conn("esp-tun", "tunnel", "esp", "aes256gcm16"),
    Conn("esp-tr", "transport", "esp", "aes128-sha256"),
    Conn("ah-tun", "tunnel", "ah", "sha256"),
    Conn("ah-tr", "transport", "ah", "sha256"),
]
BY_NAME = {c.name: c for c in CONNS}
# ours against ours: the right daemon shares the namespace with charon, so it
# listens on other ports (and uses its own identities); the SPD entries of the
# two never exist at the same time
OURS_VS_OURS = Conn("oo-tun", "tunnel", "esp", "aes256gcm16")
RIGHT_PORTS = (1500, 14500)



class Peers:
    def __init__(self, lab: Lab, ours: Ours, charon: Charon | None, right: Ours | None = None) -> None:
        self.lab = lab
        self.ours = ours
        self.charon = charon
        self.right = right

    def logs(self) -> str:
        parts = [f"--- our daemon (left):\n{self.ours.log()[-8000:]}"]
        if self.right is not None:
            parts.append(f"--- our daemon (right):\n{self.right.log()[-8000:]}")
        if self.charon is not None:
            parts.append(f"--- charon (right):\n{self.charon.log()[-8000:]}")
        for ns in (self.lab.left, self.lab.right):
            for args in (("ip", "-s", "-n", ns, "xfrm", "state"), ("ip", "-n", ns, "xfrm", "policy"),
                         ("ip", "netns", "exec", ns, "cat", "/proc/net/xfrm_stat")):
                parts.append(f"--- {' '.join(args)}:\n{sh(*args, check=False).stdout}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def peers(lab, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vs-strongswan")
    ours = Ours(lab.left, workdir, "left", [*CONNS, OURS_VS_OURS], peer_ports={OURS_VS_OURS.name: RIGHT_PORTS})
    right = Ours(lab.right, workdir, "right", [OURS_VS_OURS], ports=RIGHT_PORTS)
    charon = Charon(lab.right, workdir, swanctl_conf(CONNS, "right"))
    p = Peers(lab, ours, charon, right)
    started = time.monotonic()
    try:
        # the daemons' imports take seconds here: they run while charon starts
        ours.spawn()
        right.spawn()
        charon.start()
        ours.wait_ready()
        right.wait_ready()
        print(f"\n[vs-strongswan] charon and our two daemons ready in {time.monotonic() - started:.1f} s")
        yield p
        # SIGTERM: each daemon deletes its SAs and removes all it installed, and exits 0
        assert (ours.stop(), right.stop()) == (0, 0), p.logs()
        for ns in (lab.left, lab.right):
            assert not [sa for sa in xfrm_states(ns).values() if is_our_reqid(sa.reqid)], p.logs()
            assert our_policies(ns) == [], p.logs()
    finally:
        for proc in (p.right, ours, charon):
            if proc is not None:
                proc.stop()
        flush_xfrm(lab)
        print(f"[vs-strongswan] module took {time.monotonic() - started:.1f} s in the guest")


# ---------------------------------------------------------------- steps

def bring_up(p: Peers, conn: Conn, initiator: str) -> dict:
    """Negotiate ``conn`` started by ``initiator`` (ours | strongswan | right);
    wait until both namespaces hold both SAs; our engine's key record."""
    before = len(p.ours.derived_keys())
    if initiator == "ours":
        p.ours.control("initiate", name=conn.name)
    elif initiator == "right":
        p.right.control("initiate", name=conn.name)
    else:
        p.charon.swanctl("--initiate", "--child", conn.child, "--timeout", "60", timeout=90)
    rec = wait_for(lambda: next((r for r in p.ours.derived_keys()[before:] if r["connection"] == conn.name), None),
                   60, f"our engine to install {conn.name}")
    spis = {rec["spi_in"], rec["spi_out"]}
    for ns in (p.lab.left, p.lab.right):
        wait_for(lambda ns=ns: spis <= set(xfrm_states(ns)), 30, f"both SAs of {conn.name} in {ns}")
    return rec


def tear_down(p: Peers, conn: Conn, rec: dict, initiator: str) -> None:
    """The initiator deletes the IKE SA; both namespaces lose the SAs and policies."""
    if initiator == "ours":
        assert p.ours.control("terminate", name=conn.name)["deleted"] == 1
    elif initiator == "right":
        assert p.right.control("terminate", name=conn.name)["deleted"] == 1
    else:
        p.charon.swanctl("--terminate", "--ike", conn.name, "--timeout", "30", timeout=60)
    spis = {rec["spi_in"], rec["spi_out"]}
    for ns in (p.lab.left, p.lab.right):
        wait_for(lambda ns=ns: not spis & set(xfrm_states(ns)), 30, f"the SAs of {conn.name} to leave {ns}")
        wait_for(lambda ns=ns: not spd_entries(ns), 30, f"the policies of {conn.name} to leave {ns}")


def run_scenario(p: Peers, conn: Conn, initiator: str) -> None:
    try:
        rec = bring_up(p, conn, initiator)
        assert (rec["protocol"], rec["mode"]) == (conn.protocol, conn.mode), rec
        assert rec["initiator"] == (initiator == "ours"), rec
        check_sas(p, conn, rec)
        check_ping(p, conn, rec)
        tear_down(p, conn, rec, initiator)
    except BaseException as exc:
        logs = p.logs()
        reset(p)
        raise AssertionError(f"{conn.name}, {initiator} initiating: {exc}\n{logs}") from exc


def reset(p: Peers) -> None:
    """After a failed scenario: every IKE SA deleted by both sides and both
    namespaces' SAD and SPD emptied, so the next scenario starts clean."""
    for conn in [*CONNS, OURS_VS_OURS]:
        for ours in (p.ours, p.right):
            if ours is not None and ours.proc is not None and ours.proc.poll() is None:
                try:
                    ours.control("terminate", name=conn.name)
                except (AssertionError, OSError, ValueError):
                    pass
        if p.charon is not None and p.charon.proc is not None and p.charon.proc.poll() is None:
            p.charon.swanctl("--terminate", "--ike", conn.name, "--timeout", "5", check=False, timeout=30)
    time.sleep(1)
    flush_xfrm(p.lab)


# ---------------------------------------------------------------- scenarios

@pytest.mark.parametrize("name, initiator", [
    ("esp-tun", "ours"),
    ("esp-tun", "strongswan"),
    ("esp-tr", "ours"),
    ("ah-tun", "strongswan"),
    ("ah-tr", "ours"),
])
def test_engine_vs_strongswan(peers, name, initiator):
    started = time.monotonic()
    run_scenario(peers, BY_NAME[name], initiator)
    print(f"[vs-strongswan] {name} ({initiator} initiating): {time.monotonic() - started:.1f} s")


def test_ours_vs_ours(peers):
    """Both ends ours with the kernel datapath: the two engines derived the
    same keys, both kernels hold them, and ping goes through."""
    started = time.monotonic()
    p, conn = peers, OURS_VS_OURS
    try:
        rec = bring_up(p, conn, "ours")
        peer = wait_for(lambda: next((r for r in p.right.derived_keys() if r["connection"] == conn.name), None), 30,
                        "the right engine's keys")
        assert (peer["spi_in"], peer["spi_out"]) == (rec["spi_out"], rec["spi_in"])
        assert (peer["encr_in"], peer["encr_out"]) == (rec["encr_out"], rec["encr_in"])
        assert not peer["initiator"]
        check_sas(p, conn, rec, peer_tagged=True)
        check_ping(p, conn, rec)
        tear_down(p, conn, rec, "right")
    except BaseException as exc:
        logs = p.logs()
        reset(p)
        raise AssertionError(f"ours vs ours: {exc}\n{logs}") from exc
    print(f"[vs-strongswan] ours vs ours: {time.monotonic() - started:.1f} s")
