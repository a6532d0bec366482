"""Checks shared by the guest's interop modules (charon, Libreswan): our SAs carry the keys our
engine derived and the peer's namespace has the same SAs; ping goes through exactly those SAs."""

from __future__ import annotations

import re

from engine.datapath.kernel_policy import REQID_BASE, is_our_priority, is_our_reqid
from tests.kernel.hostns import our_policies

# ``p`` below: the module's peers, anything with ``lab`` (Lab) and ``ours`` (peers.Ours, the left side).
from .lab import LEFT_INNER, LEFT_OUTER, RIGHT_INNER, RIGHT_OUTER, Lab, sh
from .peers import Conn, KernelSa, xfrm_errors, xfrm_states

# proposal -> the kernel's algorithm per attribute, and which key each carries
KERNEL_ALGS = {
    "aes256gcm16": {"aead": ("rfc4106(gcm(aes))", "encr")},
    "aes256gcm16-x25519": {"aead": ("rfc4106(gcm(aes))", "encr")},
    "aes128-sha256": {"enc": ("cbc(aes)", "encr"), "auth-trunc": ("hmac(sha256)", "integ")},
    "sha256": {"auth-trunc": ("hmac(sha256)", "integ")},
}
PINGS = 3


def flush_xfrm(lab: Lab) -> None:
    """Empty both namespaces' SAD and SPD (after a module, or a failed scenario)."""
    for ns in (lab.left, lab.right):
        sh("ip", "-n", ns, "xfrm", "state", "flush", check=False)
        sh("ip", "-n", ns, "xfrm", "policy", "flush", check=False)


def spd_entries(ns: str) -> list[str]:
    """The namespace's SPD entries (``ip xfrm policy`` also lists the per-socket
    bypass policies of the IKE sockets, as "socket in/out": not these)."""
    return re.findall(r"\bdir (?:in|out|fwd) .*", sh("ip", "-n", ns, "xfrm", "policy").stdout)


def expected_algs(conn: Conn, rec: dict, direction: str) -> dict[str, tuple[str, str]]:
    """What ``ip xfrm state`` must show for our SA of ``direction`` (in/out)."""
    return {attr: (alg, rec[f"{kind}_{direction}"]) for attr, (alg, kind) in KERNEL_ALGS[conn.proposal].items()}


def check_sas(p, conn: Conn, rec: dict, peer_tagged: bool = False) -> tuple[KernelSa, KernelSa]:
    """Our SAs carry our tag and the engine's keys; the peer's namespace has
    the same SAs with the same keys."""
    ours, theirs = xfrm_states(p.lab.left), xfrm_states(p.lab.right)
    sa_in, sa_out = ours[rec["spi_in"]], ours[rec["spi_out"]]
    assert (sa_in.src, sa_in.dst, sa_out.src, sa_out.dst) == (RIGHT_OUTER, LEFT_OUTER, LEFT_OUTER, RIGHT_OUTER)
    for sa in (sa_in, sa_out):
        assert (sa.proto, sa.mode) == (conn.protocol, conn.mode), sa
        assert sa.reqid == REQID_BASE + rec["reqid"] and is_our_reqid(sa.reqid), sa
    assert sa_in.algs == expected_algs(conn, rec, "in"), (sa_in, rec)
    assert sa_out.algs == expected_algs(conn, rec, "out"), (sa_out, rec)
    # the key strings are real keys, not empty or shared between directions
    for attr in sa_in.algs:
        assert sa_in.algs[attr][1] != sa_out.algs[attr][1] and len(sa_in.algs[attr][1]) >= 32

    peer_in, peer_out = theirs[rec["spi_out"]], theirs[rec["spi_in"]]
    assert (peer_in.src, peer_in.dst, peer_out.src, peer_out.dst) == (LEFT_OUTER, RIGHT_OUTER, RIGHT_OUTER, LEFT_OUTER)
    assert peer_in.algs == sa_out.algs and peer_out.algs == sa_in.algs
    assert (peer_in.proto, peer_in.mode, peer_out.proto, peer_out.mode) == (conn.protocol, conn.mode) * 2
    assert is_our_reqid(peer_in.reqid) == peer_tagged, peer_in

    # our SPD entries: all in our priority band, their templates name our reqid
    policies = sh("ip", "-n", p.lab.left, "xfrm", "policy").stdout
    entries = spd_entries(p.lab.left)
    # out and in; a tunnel adds fwd in (with a template) and fwd out (allow only, as charon's)
    want, templates = (4, 3) if conn.mode == "tunnel" else (2, 2)
    assert len(entries) == want and len(our_policies(p.lab.left)) == want, policies
    assert all(is_our_priority(int(re.search(r"priority (\d+)", e).group(1))) for e in entries), policies
    assert policies.count(f"reqid {sa_in.reqid} mode {conn.mode}") == templates, policies
    assert policies.count("tmpl ") == templates, policies
    return sa_in, sa_out


def check_ping(p, conn: Conn, rec: dict) -> None:
    """Ping goes through the SAs: each of the four counted exactly the
    pings, and no XFRM error counter moved in either namespace."""
    left, right = p.lab.left, p.lab.right
    errors_before = (xfrm_errors(left), xfrm_errors(right))
    before = (xfrm_states(left), xfrm_states(right))
    if conn.mode == "tunnel":
        got = p.lab.ping(left, RIGHT_INNER, src=LEFT_INNER, count=PINGS)
    else:
        got = p.lab.ping(left, RIGHT_OUTER, count=PINGS)
    assert got == PINGS, f"{got}/{PINGS} echo replies through {conn.name}"
    after = (xfrm_states(left), xfrm_states(right))
    # the kernel counts what an SA protects: 84-byte packets in a tunnel, 64-byte ICMP in transport
    size = 84 if conn.mode == "tunnel" else 64
    for side, (b, a) in enumerate(zip(before, after)):
        for spi in (rec["spi_in"], rec["spi_out"]):
            assert (a[spi].packets - b[spi].packets, a[spi].bytes - b[spi].bytes) == (PINGS, PINGS * size), \
                (["left", "right"][side], hex(spi), b[spi], a[spi])
    assert (xfrm_errors(left), xfrm_errors(right)) == errors_before

    # what our daemon reports (the console's counters) is what the kernel counted
    reported = {(c["spi"], c["direction"]): c for c in p.ours.control("counters")["sas"]}
    for spi, direction in ((rec["spi_in"], "in"), (rec["spi_out"], "out")):
        assert reported[(spi, direction)]["packets"] == after[0][spi].packets, reported
