"""remote_addrs naming the peer by host name (``remote_addrs = ["gw.test"]``), against a real
charon: our daemon resolves it with the system resolver. The name lives in the namespace's own
hosts file (``ip netns exec`` mounts /etc/netns/NAME/hosts over /etc/hosts), so no DNS query
leaves the machine; .test names are never real (RFC 6761)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.interop.lab import SIDES, Charon, Ours, lab, our_policy, wait_for

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("direction", ["we_initiate", "charon_initiates"])
def test_a_peer_named_by_host_name(tmp_path, direction):
    us, them = ("left", "right") if direction == "we_initiate" else ("right", "left")
    name = f"{them}-gw.test"
    with lab() as L:
        etc = Path("/etc/netns") / L.ns[us]
        started: list = []
        try:
            etc.mkdir(parents=True)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n{SIDES[them]['addr']} {name}\n")
            text = our_policy(us).replace(f'remote_addrs = ["{SIDES[them]["addr"]}"]', f'remote_addrs = ["{name}"]')
            assert name in text
            o = Ours(L, us, tmp_path, text).start("--datapath", "none")
            started.append(o)
            c = Charon(L, them, tmp_path).start()
            started.append(c)
            if direction == "we_initiate":
                o.cli("initiate", "psk-tunnel")
            else:
                r = c.swanctl("--initiate", "--child", "psk-tunnel", "--timeout", "20", check=False)
                assert r.returncode == 0, r.stdout + r.stderr
            wait_for(lambda: [sa for sa in o.sas() if sa["state"] == "ESTABLISHED" and sa["children"]],
                     what="our IKE and CHILD SA")
            sa = o.sas()[0]
            assert sa["remote_addr"] == SIDES[them]["addr"] and sa["name"] == "psk-tunnel"
        finally:
            for x in reversed(started):
                x.stop()
            shutil.rmtree(etc, ignore_errors=True)
            for x in started:
                print(f"===== {x.dir.name} log (tail)\n{x.log()[-6000:]}")


def test_a_transport_trap_to_a_named_peer_comes_up_on_the_first_packet(tmp_path):
    """``start_action = "trap"``, transport mode, ``remote_addrs = ["right-gw.test"]``, ours on both
    ends (charon's libipsec has no transport mode): the trap routes the address the name resolves to,
    so a ping to the peer starts IKE to that name and the later pings go through the SA."""
    from tests.interop.lab_esp import Stopper, installed, wait_child
    from tests.interop.test_userspace_datapath import _variant

    name = "right-gw.test"
    with lab() as L, Stopper() as st:
        etc = Path("/etc/netns") / L.ns["left"]
        st.callback(shutil.rmtree, etc, True)
        etc.mkdir(parents=True)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{SIDES['right']['addr']} {name}\n")
        st.ours(L, "right", tmp_path, _variant("right", transport=True))
        text = _variant("left", transport=True, start_action="trap").replace(
            f'remote_addrs = ["{SIDES["right"]["addr"]}"]', f'remote_addrs = ["{name}"]')
        assert name in text
        left = st.ours(L, "left", tmp_path, text)
        dst = SIDES["right"]["addr"]
        # The trap goes in once the name resolved (at start); the first packets wait for IKE.
        wait_for(lambda: f"{dst} dev ipsecc" in L.exec("left", "ip", "route", "show", "table", "4533", check=False).stdout,
                 what=f"the trap's route to {dst} into the TUN device")
        L.exec("left", "ping", "-n", "-q", "-c", "2", "-i", "0.5", "-W", "1", dst, check=False)
        child = wait_child(left)
        assert child["mode"] == "transport"
        sa = [s for s in left.sas() if s["children"]][0]
        assert sa["remote_addr"] == dst and sa["initiator"]
        before = installed(left)[0]["packets_out"]
        L.exec("left", "ping", "-n", "-q", "-c", "3", "-i", "0.1", "-W", "2", dst)
        wait_for(lambda: installed(left)[0]["packets_out"] >= before + 3, 5, 0.2, "3 pings through the SA")
