"""A virtual IP with the kernel datapath: our daemon (datapath = "kernel", vips = 0.0.0.0) as the
road-warrior client of charon (kernel-netlink) with a pool, in the guest's namespaces. The
address the gateway assigns goes on our loopback device while the IKE SA lives; a ping from it
to the host behind charon goes through the CHILD SA (its kernel counters count it), and so does
one that does not bind to it (our source route); address and route go with the SA."""

from __future__ import annotations

import re
import textwrap

from engine.datapath.kernel_vip import VIP_TABLE

from .lab import LEFT_OUTER, RIGHT_INNER, RIGHT_OUTER, sh
from .peers import PSK, Charon, Ours, wait_for, xfrm_states

VIP = "198.51.100.200"

CHARON_CONF = textwrap.dedent(f"""\
    connections {{
      rw {{
        version = 2
        local_addrs = {RIGHT_OUTER}
        remote_addrs = %any
        proposals = aes256gcm16-prfsha256-x25519
        pools = rw
        local {{
          auth = psk
          id = gw.right.example
        }}
        remote {{
          auth = psk
          id = vip.left.example
        }}
        children {{
          rw-child {{
            local_ts = {RIGHT_INNER}/32
            remote_ts = dynamic
            esp_proposals = aes256gcm16
          }}
        }}
      }}
    }}
    pools {{
      rw {{
        addrs = {VIP}-198.51.100.201
      }}
    }}
    secrets {{
      ike-guest {{
        id-0 = gw.right.example
        id-1 = vip.left.example
        secret = "{PSK}"
      }}
    }}
    """)

OUR_POLICY = textwrap.dedent(f"""\
    [engine]
    datapath = "kernel"
    listen = ["{LEFT_OUTER}"]
    secrets = "secrets.toml"
    retransmit_timeout = "2s"

    [connections.vip]
    local_addrs = ["{LEFT_OUTER}"]
    remote_addrs = ["{RIGHT_OUTER}"]
    proposals = ["aes256gcm16-prfsha256-x25519"]
    local = {{ auth = "psk", id = "vip.left.example" }}
    remote = {{ auth = "psk", id = "gw.right.example" }}
    vips = ["0.0.0.0"]

    [connections.vip.children.vip-child]
    local_ts = ["dynamic"]
    remote_ts = ["{RIGHT_INNER}/32"]
    esp_proposals = ["aes256gcm16"]
    """)


def _lo_addrs(ns: str) -> str:
    return sh("ip", "-n", ns, "-o", "addr", "show", "dev", "lo").stdout


def test_virtual_ip_from_charon_goes_on_loopback_and_carries_traffic(lab, tmp_path):
    ours = Ours(lab.left, tmp_path, "left", [])
    ours.config.write_text(OUR_POLICY)
    (ours.dir / "secrets.toml").write_text(f'[ike.guest]\nids = ["vip.left.example", "gw.right.example"]\n'
                                           f'secret = "{PSK}"\n')
    charon = Charon(lab.right, tmp_path, CHARON_CONF)
    # charon installs no routes here (install_routes = no): the way back to the pool's address
    sh("ip", "-n", lab.right, "route", "add", f"{VIP}/32", "via", LEFT_OUTER, "src", RIGHT_INNER)
    try:
        ours.spawn()
        charon.start()
        ours.wait_ready()
        ours.control("initiate", name="vip")
        rec = wait_for(lambda: next(iter(ours.derived_keys()), None), 60, "our CHILD SA")
        wait_for(lambda: VIP in _lo_addrs(lab.left), 30, f"{VIP} on our loopback")
        assert re.search(rf"inet {re.escape(VIP)}/32", _lo_addrs(lab.left)), _lo_addrs(lab.left)
        assert lab.ping(lab.left, RIGHT_INNER, src=VIP) == 3, (ours.log()[-4000:], charon.log()[-4000:])
        states = xfrm_states(lab.left)
        assert states[rec["spi_out"]].packets >= 3 and states[rec["spi_in"]].packets >= 3, states
        # our source route: an application that does not bind to the address takes it too
        routes = sh("ip", "-n", lab.left, "route", "show", "table", str(VIP_TABLE)).stdout
        assert re.search(rf"{re.escape(RIGHT_INNER)} dev v0 proto static .*src {re.escape(VIP)}", routes), routes
        assert lab.ping(lab.left, RIGHT_INNER) == 3
        assert xfrm_states(lab.left)[rec["spi_out"]].packets >= 6
        assert "installing new virtual IP" not in charon.log()  # charon is the gateway here
        ours.control("terminate", name="vip")
        wait_for(lambda: VIP not in _lo_addrs(lab.left), 30, f"{VIP} off our loopback")
        wait_for(lambda: not sh("ip", "-n", lab.left, "route", "show", "table", str(VIP_TABLE)).stdout.strip(),
                 30, "our source route gone")
    finally:
        print(f"--- ours:\n{ours.log()[-6000:]}\n--- charon:\n{charon.log()[-6000:]}")
        assert ours.stop() in (0, None)
        charon.stop()
        sh("ip", "-n", lab.right, "route", "del", f"{VIP}/32", check=False)
        for ns in (lab.left, lab.right):
            sh("ip", "-n", ns, "xfrm", "state", "flush", check=False)
            sh("ip", "-n", ns, "xfrm", "policy", "flush", check=False)
    assert VIP not in _lo_addrs(lab.left)  # and none left behind after the daemon stopped
    assert f"lookup {VIP_TABLE}" not in sh("ip", "-n", lab.left, "rule").stdout
