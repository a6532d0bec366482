"""``stats``: the engine's overall counters, like ``swanctl --stats``.

The control socket's ``stats`` command returns :func:`collect`'s dict; the
CLI prints it with :func:`format_stats`.
"""

from __future__ import annotations

import os
import time

from engine.ops.version import engine_version


def ike_endpoint(runtime):
    """The IkeEndpoint behind a runtime: an EngineRuntime's own, or the local endpoint's of a lab
    (LabRuntime.endpoint is a method that finds a lab endpoint by name); None if there is none."""
    ep = getattr(runtime, "endpoint", None)
    if hasattr(ep, "stats"):
        return ep
    return getattr(getattr(runtime, "local", None), "endpoint", None)


def _rss_bytes() -> int | None:
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def collect(runtime) -> dict:
    """Uptime, IKE and CHILD SA counts by state, traffic and drop totals, IKE counters, memory."""
    status = runtime.status()
    ike_states: dict[str, int] = {}
    child_states: dict[str, int] = {}
    totals = {"bytes_in": 0, "packets_in": 0, "bytes_out": 0, "packets_out": 0}
    for sa in status.ike_sas:
        ike_states[sa.state] = ike_states.get(sa.state, 0) + 1
        for c in sa.children:
            child_states[c.state] = child_states.get(c.state, 0) + 1
            for key in totals:
                totals[key] += getattr(c, key)
    try:
        _sas, drops = runtime.datapath.counters()
    except Exception:  # a datapath that cannot count must not break stats
        drops = {}
    started = getattr(runtime, "started_at", None) or time.time()
    endpoint = ike_endpoint(runtime)
    return {
        "version": engine_version(),
        "pid": os.getpid(),
        "started": started,
        "uptime": max(0.0, time.time() - started),
        "datapath": getattr(runtime.datapath, "name", "?"),
        "policy": runtime.policy.path,
        "connections": len(runtime.policy.connections),
        "rules": len(runtime.policy.rules),
        "ike_sas": {"total": sum(ike_states.values()), "half_open": ike_states.get("CONNECTING", 0),
                    "by_state": ike_states},
        "child_sas": {"total": sum(child_states.values()), "by_state": child_states},
        "traffic": totals,
        "drops": dict(sorted(drops.items())),
        "ike": dict(sorted((endpoint.stats if endpoint is not None else {}).items())),
        "rss": _rss_bytes(),
    }


def _duration(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size:
            n = s // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{s} second{'s' if s != 1 else ''}"


def format_stats(st: dict) -> str:
    since = time.strftime("%b %d %H:%M:%S %Y", time.localtime(st["started"]))
    lines = [
        f"uptime: {_duration(st['uptime'])}, since {since}",
        f"engine: {st['version']}, pid {st['pid']}, datapath {st['datapath']}",
        f"policy: {st['policy'] or '(none)'}, {st['connections']} connections, {st['rules']} rules",
    ]
    ike = st["ike_sas"]
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(ike["by_state"].items()))
    lines.append(f"IKE_SAs: {ike['total']} total, {ike['half_open']} half-open" + (f" ({states})" if states else ""))
    child = st["child_sas"]
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(child["by_state"].items()))
    lines.append(f"CHILD_SAs: {child['total']} total" + (f" ({states})" if states else ""))
    t = st["traffic"]
    lines.append(f"traffic: in {t['bytes_in']} bytes, {t['packets_in']} packets; "
                 f"out {t['bytes_out']} bytes, {t['packets_out']} packets")
    lines.append("drops: " + (", ".join(f"{r} {n}" for r, n in st["drops"].items()) or "none"))
    lines.append("IKE counters: " + (", ".join(f"{k} {n}" for k, n in st["ike"].items()) or "none"))
    if st.get("rss") is not None:
        lines.append(f"memory: rss {st['rss'] // 1024} KiB")
    return "\n".join(lines)
