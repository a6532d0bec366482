"""MOBIKE (RFC 4555) in XFRM: an SA the kernel holds, rebuilt on new outer addresses.

The kernel cannot change an SA's destination in place (it is part of the SA's
identity), so, as charon's kernel-netlink ``update_sa``, the datapath reads the
SA back (XFRM_MSG_GETSA: keys, replay state, counters, marks), deletes it and
adds :func:`moved_sa` of it. The keys go from the kernel's answer straight into
the new request; nothing here keeps them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from engine.datapath.kernel_base import KernelDatapathError, SaRef, ip_of, sa_text
from engine.datapath.kernel_policy import is_our_reqid
from engine.datapath.kernel_sa import NATT_PORT, SaConfigError, family_of, sa_id
from engine.datapath.kernel_socket import NLM_F_CREATE, NLM_F_EXCL
from engine.datapath.kernel_spd import SpdTable
from engine.datapath.xfrm_netlink import (
    UDP_ENCAP_ESPINUDP,
    XFRM_MSG_DELSA,
    XFRM_MSG_GETSA,
    XFRM_MSG_NEWSA,
    XFRM_STATE_ESN,
    xfrm_usersa_info,
)
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


class MovesChildren(SpdTable):
    """The MOBIKE move of :class:`engine.datapath.kernel.KernelDatapath`'s installed pairs."""

    def move_child(self, ev: ChildSaMoved) -> None:
        """MOBIKE (RFC 4555): put the pair of ``ev.spi_in`` on new outer addresses
        without a rekey, as charon's kernel-netlink ``update_sa``: each SA is read
        back (keys, replay state, counters), deleted and added again on the new
        addresses (engine.datapath.kernel_move), then the tunnel policies'
        templates follow. On any failure what was changed is undone and the
        pair stays where it was."""
        what = f"child {ev.child!r} (inbound SPI 0x{ev.spi_in:08x})"
        with self._lock:
            child = self._children.get(ev.spi_in)
            if child is None:
                raise KernelDatapathError(f"{what}: not installed by this datapath")
            if child.ev.mode != "tunnel":
                # transport selectors are the outer addresses: only a new CHILD SA can follow them
                raise KernelDatapathError(f"{what}: a transport mode SA cannot move")
            try:
                family = family_of(ev.local_addr)
                if family_of(ev.remote_addr) != family or family != child.sa_in.family:
                    raise SaConfigError(f"{ev.local_addr} and {ev.remote_addr}: not the SA's address family")
            except SaConfigError as exc:
                raise KernelDatapathError(f"{what}: {exc}") from None
            sa_in = dataclasses.replace(child.sa_in, daddr=str(ip_of(ev.local_addr)))
            sa_out = dataclasses.replace(child.sa_out, daddr=str(ip_of(ev.remote_addr)))
            was = child.ev
            back = dataclasses.replace(ev, local_addr=was.local_addr, remote_addr=was.remote_addr,
                                       local_port=was.local_port, remote_port=was.remote_port, encap=was.encap)
            undo: list[Callable[[], None]] = []
            try:
                self._move_sa(child.sa_in, sa_in, True, ev, back, undo, what)
                if child.pending_out is None:  # else not in the kernel yet: it goes in where the pair is then
                    self._move_sa(child.sa_out, sa_out, False, ev, back, undo, what)
                for key in child.policy_keys:
                    self.move_policy(key, ev, undo, what)
            except BaseException:
                self._rollback(undo)
                raise
            moved = ((child.sa_in, sa_in, "in"), (child.sa_out, sa_out, "out"))
            for old, new, direction in moved[:1] if child.pending_out is not None else moved:
                self._sa_index.pop((old.spi, old.daddr, old.proto), None)
                self._sa_index[(new.spi, new.daddr, new.proto)] = (ev.spi_in, direction)
            child.sa_in, child.sa_out = sa_in, sa_out
            self._mappings.forget(ev.spi_in)  # a change seen from now on is a new one
            where = dict(local_addr=ev.local_addr, remote_addr=ev.remote_addr, local_port=ev.local_port,
                         remote_port=ev.remote_port, encap=ev.encap)
            child.ev = dataclasses.replace(child.ev, **where)
            if child.pending_out is not None:
                child.pending_out = dataclasses.replace(child.pending_out, **where)

    def _move_sa(self, old: SaRef, new: SaRef, inbound: bool, ev: ChildSaMoved, back: ChildSaMoved,
                 undo: list[Callable[[], None]], what: str) -> None:
        ident = sa_id(old.daddr, old.spi, old.proto, old.family)
        replies = self._request(ident, XFRM_MSG_GETSA, 0, f"{what}: GETSA {sa_text(old)}")
        if not replies:
            raise KernelDatapathError(f"{what}: GETSA {sa_text(old)}: the kernel returned nothing")
        current = replies[0].msg
        if not is_our_reqid(current["reqid"]):
            raise KernelDatapathError(f"{what}: SA {sa_text(old)} belongs to someone else now")
        try:
            msg = moved_sa(current, inbound, ev)
            # undo puts it back where it was, also past the sequence numbers sent meanwhile
            restore = moved_sa(current, inbound, back)
        except SaConfigError as exc:
            raise KernelDatapathError(f"{what}: {exc}") from None
        self._request(ident, XFRM_MSG_DELSA, 0, f"{what}: DELSA {sa_text(old)}")
        # the keys live on only in these closures, which end with this call
        undo.append(lambda: self._request(restore, XFRM_MSG_NEWSA, NLM_F_CREATE | NLM_F_EXCL,
                                          f"{what}: NEWSA {sa_text(old)} (undo)"))
        self._request(msg, XFRM_MSG_NEWSA, NLM_F_CREATE | NLM_F_EXCL, f"{what}: NEWSA {sa_text(new)}")
        undo.append(lambda: self._request(sa_id(new.daddr, new.spi, new.proto, new.family), XFRM_MSG_DELSA, 0,
                                          f"{what}: DELSA {sa_text(new)} (undo)"))
