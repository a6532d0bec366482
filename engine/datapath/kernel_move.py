"""MOBIKE (RFC 4555) in XFRM: an SA the kernel holds, rebuilt on new outer addresses.

The kernel cannot change an SA's destination in place (it is part of the SA's
identity), so, as charon's kernel-netlink ``update_sa``, the datapath reads the
SA back (XFRM_MSG_GETSA: keys, replay state, counters, marks), deletes it and
adds :func:`moved_sa` of it. The keys go from the kernel's answer straight into
the new request; nothing here keeps them.
"""

from __future__ import annotations

from engine.datapath.kernel_sa import NATT_PORT, SaConfigError
from engine.datapath.xfrm_netlink import UDP_ENCAP_ESPINUDP, XFRM_STATE_ESN, xfrm_usersa_info
from engine.events import ChildSaMoved

OSEQ_GAP = 1 << 16
"""Outbound sequence numbers skipped by a move: packets the old SA sends between
our GETSA and DELSA must not reuse a number (with GCM the sequence number is the
nonce). A gap is harmless to the peer (its replay window just moves on); 2^16 is
more than a 10 Gbit/s link sends in the sub-millisecond window."""

DROPPED = {"XFRMA_ENCAP", "XFRMA_PAD", "XFRMA_OFFLOAD_DEV", "XFRMA_SRCADDR", "XFRMA_COADDR", "XFRMA_LTIME_VAL"}
"""Attributes of a GETSA answer not copied: the encapsulation is built anew, the
offload device belongs to the old route, and the counters come from the body."""

COUNTERS = ("bytes", "packets", "add_time", "use_time")


class SaMoveError(SaConfigError):
    """The kernel's SA cannot be moved as it is (the caller falls back to a rekey)."""


def moved_sa(current, inbound: bool, ev: ChildSaMoved) -> xfrm_usersa_info:
    """The NEWSA request for ``current`` (a decoded GETSA answer) on the outer
    addresses and encapsulation of ``ev``: same SPI, keys, replay state,
    lifetimes, counters, marks and flags."""
    src, dst = (ev.remote_addr, ev.local_addr) if inbound else (ev.local_addr, ev.remote_addr)
    attrs: list[tuple[str, object]] = []
    replay = None
    for name, value in current["attrs"]:
        if name in DROPPED or name == "XFRMA_MTIMER_THRESH" and not ev.encap:  # the kernel wants it with encap only
            continue
        if name in ("XFRMA_REPLAY_VAL", "XFRMA_REPLAY_ESN_VAL"):
            value = replay = dict(value)
            if not inbound:
                _skip_sequence_numbers(replay, bool(current["flags"] & XFRM_STATE_ESN), name)
        attrs.append((name, value))
    if replay is None:
        # without its replay state the new SA would count from 1 again: nonce reuse on the way out
        raise SaMoveError(f"the kernel returned SA 0x{current['id']['spi']:08x} without its replay state")
    # The body's counters are not read by NEWSA; XFRMA_LTIME_VAL is, so the
    # byte/packet limits and the console's counters go on where they were.
    attrs.append(("XFRMA_LTIME_VAL", {k: current["curlft"][k] for k in COUNTERS}))
    if ev.encap:
        lport, rport = ev.local_port or NATT_PORT, ev.remote_port or NATT_PORT
        sport, dport = (rport, lport) if inbound else (lport, rport)
        attrs.append(("XFRMA_ENCAP", {"encap_type": UDP_ENCAP_ESPINUDP, "encap_sport": sport,
                                      "encap_dport": dport}))
    msg = xfrm_usersa_info()
    msg["sel"] = dict(current["sel"])
    msg["id"] = {"daddr": dst, "spi": current["id"]["spi"], "proto": current["id"]["proto"]}
    msg["saddr"] = src
    msg["lft"] = dict(current["lft"])
    for name in ("reqid", "family", "mode", "replay_window", "flags"):
        msg[name] = current[name]
    msg["attrs"] = attrs
    return msg


def _skip_sequence_numbers(replay: dict, esn: bool, name: str) -> None:
    oseq = replay["oseq"] + OSEQ_GAP
    if name == "XFRMA_REPLAY_ESN_VAL" and esn:
        replay["oseq_hi"] += oseq >> 32
        if replay["oseq_hi"] > 0xFFFFFFFF:
            raise SaMoveError("the outbound SA has used up its 64-bit sequence numbers")
    elif oseq > 0xFFFFFFFF:
        raise SaMoveError("the outbound SA is too close to its last 32-bit sequence number: a rekey is due")
    replay["oseq"] = oseq & 0xFFFFFFFF
