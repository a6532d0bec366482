"""MOBIKE as initiator with the SAs kept on both sides (RFC 4555): our daemon (mobike = true;
userspace datapath, or the kernel one, which rebuilds its XFRM states on the new address with
the same SPIs, keys and sequence numbers) against charon with its kernel-netlink backend, which
updates an XFRM SA in place (Debian's charon on this machine's kernel has only kernel-libipsec,
which rekeys the CHILD SA after a move instead: tests/interop/test_roadwarrior.py). Our address
192.0.2.1 goes away and 192.0.2.3 comes: we send UPDATE_SA_ADDRESSES from there, charon moves its
SAs to the new address with the same SPIs, and a ping goes on through the same CHILD SA."""

from __future__ import annotations

import os
import re
import stat
import textwrap

import pytest

from .lab import LEFT_INNER, LEFT_OUTER, RIGHT_INNER, RIGHT_OUTER, sh
from .peers import PSK, Charon, Ours, wait_for, xfrm_states

MOVED = "192.0.2.3"

CHARON_CONF = textwrap.dedent(f"""\
    connections {{
      mob {{
        version = 2
        local_addrs = {RIGHT_OUTER}
        remote_addrs = %any
        proposals = aes256gcm16-prfsha256-x25519
        mobike = yes
        local {{
          auth = psk
          id = gw.right.example
        }}
        remote {{
          auth = psk
          id = mob.left.example
        }}
        children {{
          mob-child {{
            local_ts = {RIGHT_INNER}/32
            remote_ts = {LEFT_INNER}/32
            esp_proposals = aes256gcm16
          }}
        }}
      }}
    }}
    secrets {{
      ike-guest {{
        id-0 = gw.right.example
        id-1 = mob.left.example
        secret = "{PSK}"
      }}
    }}
    """)

OUR_POLICY = textwrap.dedent(f"""\
    [engine]
    datapath = "{{datapath}}"
    secrets = "secrets.toml"
    retransmit_timeout = "2s"

    [connections.mob]
    local_addrs = ["%any"]
    remote_addrs = ["{RIGHT_OUTER}"]
    proposals = ["aes256gcm16-prfsha256-x25519"]
    local = {{ auth = "psk", id = "mob.left.example" }}
    remote = {{ auth = "psk", id = "gw.right.example" }}

    [connections.mob.children.mob-child]
    local_ts = ["{LEFT_INNER}/32"]
    remote_ts = ["{RIGHT_INNER}/32"]
    esp_proposals = ["aes256gcm16"]
    """)


def _ike_sa(ours: Ours) -> dict | None:
    sas = [sa for sa in ours.control("list-sas")["ike_sas"] if sa["state"] == "ESTABLISHED" and sa["children"]]
    return sas[0] if sas else None


def _tun_device() -> None:
    """The guest has no udev: load the tun driver and make its node (only inside the guest)."""
    sh("modprobe", "tun", check=False)
    if not os.path.exists("/dev/net/tun"):
        os.makedirs("/dev/net", exist_ok=True)
        os.mknod("/dev/net/tun", 0o666 | stat.S_IFCHR, os.makedev(10, 200))


@pytest.mark.parametrize("datapath", ["userspace", "kernel"])
def test_our_move_keeps_the_child_sa_spis_on_both_sides(lab, tmp_path, datapath):
    if datapath == "userspace":
        _tun_device()
    ours = Ours(lab.left, tmp_path, "left", [])
    ours.config.write_text(OUR_POLICY.replace("{datapath}", datapath))
    (ours.dir / "secrets.toml").write_text(f'[ike.guest]\nids = ["mob.left.example", "gw.right.example"]\n'
                                           f'secret = "{PSK}"\n')
    charon = Charon(lab.right, tmp_path, CHARON_CONF)
    try:
        ours.spawn()
        charon.start()
        ours.wait_ready()
        ours.control("initiate", name="mob")
        sa = wait_for(lambda: _ike_sa(ours), 60, "our IKE and CHILD SA")
        child = sa["children"][0]
        spis = {child["spi_in"], child["spi_out"]}
        wait_for(lambda: spis <= set(xfrm_states(lab.right)), 30, "charon's SAs")
        assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER) == 3, (ours.log()[-4000:], charon.log()[-4000:])

        sh("ip", "netns", "exec", lab.left, "sysctl", "-qw", "net.ipv4.conf.v0.promote_secondaries=1")
        sh("ip", "-n", lab.left, "addr", "add", f"{MOVED}/24", "dev", "v0")
        sh("ip", "-n", lab.left, "addr", "del", f"{LEFT_OUTER}/24", "dev", "v0")
        moved = wait_for(lambda: (s := _ike_sa(ours)) and s["mobike_moves"] == 1 and s, 30, "our SA moved")
        assert moved["local_addr"] == MOVED and (moved["spi_i"], moved["spi_r"]) == (sa["spi_i"], sa["spi_r"])
        assert {moved["children"][0]["spi_in"], moved["children"][0]["spi_out"]} == spis  # no rekey of ours
        log = charon.log()
        assert re.search(r"parsed INFORMATIONAL request \d+ \[ N\(UPD_SA_ADDR\) N\(NATD_S_IP\) N\(NATD_D_IP\) "
                         r"N\(COOKIE2\) \]", log), log[-4000:]
        assert "CHILD_REKEY" not in log, log[-4000:]  # charon updated its SAs in place
        states = wait_for(lambda: (st := xfrm_states(lab.right)) and all(
            MOVED in (st[s].src, st[s].dst) for s in spis if s in st) and spis <= set(st) and st,
            30, "charon's SAs on the new address")
        before = states[child["spi_in"]].packets  # charon's outbound SA: our inbound SPI
        assert lab.ping(lab.left, RIGHT_INNER, src=LEFT_INNER) == 3, (ours.log()[-4000:], charon.log()[-4000:])
        after = xfrm_states(lab.right)
        assert after[child["spi_in"]].packets >= before + 3, (before, after)  # the same SA carried them
        assert {k for k in after if k in spis} == spis
        if datapath == "kernel":
            # ours too: the same XFRM states, now on the new address, carried the ping (no rekey)
            mine = xfrm_states(lab.left)
            assert {k for k in mine if k in spis} == spis, mine
            assert (mine[child["spi_out"]].src, mine[child["spi_out"]].dst) == (MOVED, RIGHT_OUTER), mine
            assert (mine[child["spi_in"]].src, mine[child["spi_in"]].dst) == (RIGHT_OUTER, MOVED), mine
            assert mine[child["spi_out"]].packets >= 6 and mine[child["spi_in"]].packets >= 6, mine
            assert "rekeying it instead" not in ours.log() and "moved to" in ours.log(), ours.log()[-4000:]
            assert "N(REKEY_SA)" not in ours.log(), ours.log()[-4000:]
    finally:
        print(f"--- ours:\n{ours.log()[-6000:]}\n--- charon:\n{charon.log()[-6000:]}")
        ours.stop()
        charon.stop()
        sh("ip", "-n", lab.left, "addr", "add", f"{LEFT_OUTER}/24", "dev", "v0", check=False)
        sh("ip", "-n", lab.left, "addr", "del", f"{MOVED}/24", "dev", "v0", check=False)
        sh("ip", "-n", lab.left, "route", "replace", f"{RIGHT_INNER}/32", "via", RIGHT_OUTER, "src", LEFT_INNER,
           check=False)
        for ns in (lab.left, lab.right):
            sh("ip", "-n", ns, "xfrm", "state", "flush", check=False)
            sh("ip", "-n", ns, "xfrm", "policy", "flush", check=False)
