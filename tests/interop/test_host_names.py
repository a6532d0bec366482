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
