"""Traffic selectors compiled for the per-packet policy check.

An inbound packet must match the SA's selectors (RFC 4301 §5.2 step 4):
its source inside one of the remote selectors and its destination inside
one of the local ones, protocol and ports included. `TrafficSelector`
works on ``ipaddress`` objects; here each selector becomes a tuple of
raw-byte bounds so the check is a few byte-string comparisons.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.policy.ts import TrafficSelector

CompiledTs = tuple[bytes, bytes, int, int, int, bool]
"""(first address, last address, protocol or 0, first port, last port, any port)."""


def compile_selectors(selectors: Iterable[TrafficSelector], resolve: bytes | None = None) -> tuple[CompiledTs, ...]:
    """Compile selectors; a ``dynamic`` one becomes the host ``resolve`` (raw address bytes)."""
    out: list[CompiledTs] = []
    for ts in selectors:
        if ts.dynamic:
            if resolve is None:
                raise ValueError("a 'dynamic' traffic selector needs the SA's address to resolve it")
            lo = hi = resolve
        else:
            lo, hi = ts.start.packed, ts.end.packed
        out.append((lo, hi, ts.protocol, ts.start_port, ts.end_port, ts.any_port))
    return tuple(out)


def matches(selectors: tuple[CompiledTs, ...], addr: bytes, proto: int, port: int | None) -> bool:
    """Whether one side of a packet (address, protocol, port) falls in any selector.

    Same rules as `TrafficSelector.contains_packet`: a packet without a port
    (no port protocol, or a non-first fragment) only matches port-agnostic
    selectors.
    """
    n = len(addr)
    for lo, hi, sproto, sport, eport, any_port in selectors:
        if len(lo) != n or not lo <= addr <= hi:
            continue
        if sproto and sproto != proto:
            continue
        if any_port:
            return True
        if port is not None and sport <= port <= eport:
            return True
    return False


def covers_everything(selectors: tuple[CompiledTs, ...], version: int) -> bool:
    """True when some selector admits every packet of that IP version (no check needed)."""
    width = 4 if version == 4 else 16
    lo_all, hi_all = bytes(width), b"\xff" * width
    return any(lo == lo_all and hi == hi_all and not proto and any_port
               for lo, hi, proto, _s, _e, any_port in selectors)
