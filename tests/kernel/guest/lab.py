"""Helpers for the kernel tests inside the guest: two namespaces joined by a
veth, matching ChildSaInstalled pairs with fixed keys, ping, ip xfrm."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, replace

from engine.events import ChildKeys, ChildSaInstalled
from engine.policy.ts import TrafficSelector
from engine.secret import Secret

LEFT_OUTER, RIGHT_OUTER = "192.0.2.1", "192.0.2.2"
LEFT_INNER, RIGHT_INNER = "198.51.100.1", "198.51.100.129"


def sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


@dataclass(frozen=True)
class Lab:
    """Namespace names: left has 192.0.2.1 and 198.51.100.1, right 192.0.2.2 and 198.51.100.129."""

    left: str
    right: str

    def xfrm(self, ns: str, what: str = "state") -> str:
        return sh("ip", "-n", ns, "xfrm", what).stdout

    def ping(self, ns: str, dst: str, src: str | None = None, count: int = 3) -> int:
        """Echo replies received."""
        args = ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2"]
        if src:
            args += ["-I", src]
        proc = sh(*args, dst, check=False)
        m = re.search(r"(\d+) received", proc.stdout)
        if m is None and "Operation not permitted" in proc.stderr:
            return 0  # a block policy refused even ping's first probe
        assert m, f"no ping summary in:\n{proc.stdout}{proc.stderr}"
        return int(m.group(1))


def create_lab(tag: str) -> Lab:
    lab = Lab(f"ipsc-l-{tag}", f"ipsc-r-{tag}")
    sh("ip", "netns", "add", lab.left)
    sh("ip", "netns", "add", lab.right)
    sh("ip", "link", "add", "v0", "netns", lab.left, "type", "veth", "peer", "name", "v0", "netns", lab.right)
    for ns, outer, inner, peer_outer, peer_inner in (
            (lab.left, LEFT_OUTER, LEFT_INNER, RIGHT_OUTER, RIGHT_INNER),
            (lab.right, RIGHT_OUTER, RIGHT_INNER, LEFT_OUTER, LEFT_INNER)):
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", "v0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{outer}/24", "dev", "v0")
        sh("ip", "-n", ns, "addr", "add", f"{inner}/32", "dev", "lo")
        sh("ip", "-n", ns, "route", "add", f"{peer_inner}/32", "via", peer_outer, "src", inner)
    return lab


def destroy_lab(lab: Lab) -> None:
    for ns in (lab.left, lab.right):
        sh("ip", "netns", "del", ns, check=False)


def key(seed: int, n: int) -> bytes:
    """A recognisable fixed key: seed, seed+1, ..."""
    return bytes((seed + i) & 0xFF for i in range(n))


@dataclass(frozen=True)
class Suite:
    """Transforms of a CHILD SA and the key lengths they need."""

    protocol: str = "esp"
    encr_id: int | None = 20          # AES_GCM_16
    encr_key_length: int | None = 256
    encr_bytes: int = 36
    integ_id: int | None = None
    integ_bytes: int = 0


GCM256 = Suite()
CBC128_SHA256 = Suite(encr_id=12, encr_key_length=128, encr_bytes=16, integ_id=12, integ_bytes=32)
CHACHA20 = Suite(encr_id=28, encr_key_length=None, encr_bytes=36)
AH_SHA256 = Suite(protocol="ah", encr_id=None, encr_key_length=None, encr_bytes=0, integ_id=12, integ_bytes=32)


@dataclass(frozen=True)
class Pair:
    left: ChildSaInstalled
    right: ChildSaInstalled
    key_lr: bytes
    """Encryption (or, for AH, integrity) key of the left->right SA."""
    key_rl: bytes


def child_pair(suite: Suite = GCM256, mode: str = "tunnel", reqid: int = 1, spi_l: int = 0xC0DE0001,
               spi_r: int = 0xC0DE1001, unique_id: int = 1, **extra) -> Pair:
    """Matching events for both ends. ``spi_l``: left's inbound SPI (the
    right->left SA), ``spi_r``: right's. ``extra`` goes to both events."""
    seed = spi_l & 0x7F
    e_lr, e_rl = key(0x10 + seed, suite.encr_bytes), key(0x90 + seed, suite.encr_bytes)
    i_lr, i_rl = key(0x40 + seed, suite.integ_bytes), key(0xC0 + seed, suite.integ_bytes)
    if mode == "tunnel":
        l_ts, r_ts = TrafficSelector.host(LEFT_INNER), TrafficSelector.host(RIGHT_INNER)
    else:
        l_ts, r_ts = TrafficSelector.host(LEFT_OUTER), TrafficSelector.host(RIGHT_OUTER)
    common = dict(ike_sa=1, connection="lab", child="lab", unique_id=unique_id, reqid=reqid,
                  protocol=suite.protocol, mode=mode, encr_id=suite.encr_id,
                  encr_key_length=suite.encr_key_length, integ_id=suite.integ_id, esn=False)
    common.update(extra)
    left = ChildSaInstalled(
        spi_in=spi_l, spi_out=spi_r, local_addr=LEFT_OUTER, remote_addr=RIGHT_OUTER,
        local_ts=(l_ts,), remote_ts=(r_ts,),
        keys=ChildKeys(Secret(e_rl), Secret(i_rl), Secret(e_lr), Secret(i_lr)), **common)
    right = ChildSaInstalled(
        spi_in=spi_r, spi_out=spi_l, local_addr=RIGHT_OUTER, remote_addr=LEFT_OUTER,
        local_ts=(r_ts,), remote_ts=(l_ts,),
        keys=ChildKeys(Secret(e_lr), Secret(i_lr), Secret(e_rl), Secret(i_rl)), **common)
    if suite.protocol == "ah":
        return Pair(left, right, i_lr, i_rl)
    return Pair(left, right, e_lr, e_rl)


def with_changes(ev: ChildSaInstalled, **changes) -> ChildSaInstalled:
    return replace(ev, **changes)


def by_spi(counters) -> dict[int, object]:
    return {c.spi: c for c in counters}
