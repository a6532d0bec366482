"""Prometheus metrics in the text exposition format (version 0.0.4).

:class:`Metrics` turns the runtime's status snapshot, datapath counters and
events into metric families: per connection (state, IKE SAs, traffic summed
over all its CHILD SAs, failed negotiations by notify, DPD timeouts), per
CHILD SA (bytes, packets, drops by reason, idle time), and engine-wide drops
by reason and IKE counters. engine.ops.metrics_export writes them to a file
for node_exporter's textfile collector or serves them on loopback.

Per CHILD SA series carry the SA's ``unique_id``: a rekey starts new series
(its counters start at zero). The per-connection traffic counters add up
every CHILD SA this process saw, so they only grow while it runs.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from engine.events import DpdTimeout, Event, IkeSaStateChanged, IkeState, NegotiationFailed
from engine.ops.stats import ike_endpoint
from engine.ops.version import engine_version

PREFIX = "ipsec_console"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return repr(float(v))


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[str, float]] = field(default_factory=list)

    def add(self, value: float, **labels) -> None:
        self.samples.append((_labels(**labels), value))

    def text(self) -> str:
        head = f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"
        return head + "".join(f"{self.name}{lab} {_number(v)}\n" for lab, v in self.samples)


class TrafficTotals:
    """Bytes and packets per (connection, child) over every CHILD SA seen, across rekeys.

    Fed with status snapshots: each SA's counters are remembered per SPI and only the growth
    since the last snapshot is added, so a rekeyed SA's traffic is never lost nor counted twice.
    """

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], dict[str, int]] = defaultdict(
            lambda: {"bytes_in": 0, "packets_in": 0, "bytes_out": 0, "packets_out": 0})
        self._seen: dict[tuple[int, int], dict[str, int]] = {}

    def update(self, status) -> None:
        live = set()
        for sa in status.ike_sas:
            for c in sa.children:
                key = (c.spi_in, c.spi_out)
                live.add(key)
                last = self._seen.setdefault(key, {})
                total = self.totals[(sa.name, c.name)]
                for counter in total:
                    now = getattr(c, counter)
                    grew = now - last.get(counter, 0)
                    if grew > 0:
                        total[counter] += grew
                    last[counter] = max(now, last.get(counter, 0))
        for key in list(self._seen):
            if key not in live:
                del self._seen[key]


OBSERVED = (NegotiationFailed, DpdTimeout, IkeSaStateChanged)
"""The events `Metrics.observe` counts (what the exporter subscribes to)."""


class Metrics:
    """Collects events between scrapes and renders the exposition text on demand."""

    def __init__(self) -> None:
        self.traffic = TrafficTotals()
        self.failures: dict[tuple[str, str], int] = defaultdict(int)
        """(connection, notify) -> failed negotiations."""
        self.dpd_timeouts: dict[str, int] = defaultdict(int)
        self.established: dict[str, int] = defaultdict(int)
        """IKE SAs that reached ESTABLISHED, per connection."""

    def observe(self, event: Event) -> None:
        if isinstance(event, NegotiationFailed):
            self.failures[(event.connection, event.notify)] += 1
        elif isinstance(event, DpdTimeout):
            self.dpd_timeouts[event.connection] += 1
        elif isinstance(event, IkeSaStateChanged) and event.new == IkeState.ESTABLISHED \
                and event.old == IkeState.CONNECTING:
            self.established[event.connection] += 1

    def render(self, runtime, now: float | None = None) -> str:
        """The whole exposition for ``runtime`` (anything with status(), connections(), policy, datapath)."""
        now = time.time() if now is None else now
        status = runtime.status()
        self.traffic.update(status)
        try:
            _sas, drops = runtime.datapath.counters()
        except Exception:  # a datapath that cannot count must not break the scrape
            drops = {}
        P = PREFIX
        fam = {
            "info": _Family(f"{P}_info", "gauge", "Engine version and datapath (always 1)."),
            "start": _Family(f"{P}_start_time_seconds", "gauge", "When the engine started (Unix time)."),
            "conn_up": _Family(f"{P}_connection_up", "gauge", "1 when the connection has an established IKE SA."),
            "ike": _Family(f"{P}_ike_sas", "gauge", "IKE SAs per connection and state."),
            "established": _Family(f"{P}_ike_sas_established_total", "counter",
                                   "IKE SAs that reached ESTABLISHED, per connection."),
            "failures": _Family(f"{P}_negotiation_failures_total", "counter",
                                "Failed negotiations per connection and the notify that ended them."),
            "dpd": _Family(f"{P}_dpd_timeouts_total", "counter", "Peers that stopped answering liveness checks."),
            "child_sas": _Family(f"{P}_child_sas", "gauge", "Installed CHILD SAs per connection and child."),
            "conn_bytes": _Family(f"{P}_connection_bytes_total", "counter",
                                  "Bytes through all CHILD SAs of a child config, across rekeys."),
            "conn_packets": _Family(f"{P}_connection_packets_total", "counter",
                                    "Packets through all CHILD SAs of a child config, across rekeys."),
            "sa_bytes": _Family(f"{P}_child_sa_bytes_total", "counter", "Bytes through one CHILD SA."),
            "sa_packets": _Family(f"{P}_child_sa_packets_total", "counter", "Packets through one CHILD SA."),
            "sa_drops": _Family(f"{P}_child_sa_drops_total", "counter",
                                "Inbound packets one CHILD SA dropped, by reason (replay, icv, malformed, ...)."),
            "sa_idle": _Family(f"{P}_child_sa_idle_seconds", "gauge",
                               "Seconds since one CHILD SA last carried a packet."),
            "sa_expire": _Family(f"{P}_child_sa_expire_seconds", "gauge", "Seconds until one CHILD SA expires."),
            "drops": _Family(f"{P}_drops_total", "counter",
                             "Packets dropped outside any CHILD SA, by reason (no_sa, discard_rule, ...)."),
            "ike_counters": _Family(f"{P}_ike_messages_total", "counter",
                                    "IKE messages by what happened to them (retransmits, malformed, ...)."),
        }
        fam["info"].add(1, version=engine_version(), datapath=getattr(runtime.datapath, "name", "?"))
        started = getattr(runtime, "started_at", None)
        if started:
            fam["start"].add(started)
        up = {sa.name for sa in status.ike_sas if sa.state in ("ESTABLISHED", "REKEYING", "REKEYED")}
        ike_counts: dict[tuple[str, str], int] = defaultdict(int)
        child_counts: dict[tuple[str, str], int] = defaultdict(int)
        for sa in status.ike_sas:
            ike_counts[(sa.name, sa.state)] += 1
            for c in sa.children:
                if c.state == "INSTALLED":
                    child_counts[(sa.name, c.name)] += 1
                lab = dict(connection=sa.name, child=c.name, unique_id=c.unique_id)
                fam["sa_bytes"].add(c.bytes_in, **lab, direction="in")
                fam["sa_bytes"].add(c.bytes_out, **lab, direction="out")
                fam["sa_packets"].add(c.packets_in, **lab, direction="in")
                fam["sa_packets"].add(c.packets_out, **lab, direction="out")
                for reason, n in c.drops:
                    fam["sa_drops"].add(n, **lab, reason=reason)
                for direction, ago in (("in", c.last_in_ago), ("out", c.last_out_ago)):
                    if ago is not None:
                        fam["sa_idle"].add(round(ago, 3), **lab, direction=direction)
                if c.expire_in is not None:
                    fam["sa_expire"].add(round(c.expire_in, 3), **lab)
        children_by_conn: dict[str, list[str]] = {}
        for conn in runtime.policy.connections:
            fam["conn_up"].add(1 if conn.name in up else 0, connection=conn.name)
            children_by_conn[conn.name] = [k.name for k in conn.children]
        for (name, state), n in sorted(ike_counts.items()):
            fam["ike"].add(n, connection=name, state=state)
        for name in sorted(set(children_by_conn) | {n for n, _ in child_counts}):
            for child in children_by_conn.get(name) or sorted({k for n, k in child_counts if n == name}):
                fam["child_sas"].add(child_counts.get((name, child), 0), connection=name, child=child)
        for (name, child), t in sorted(self.traffic.totals.items()):
            for direction in ("in", "out"):
                fam["conn_bytes"].add(t[f"bytes_{direction}"], connection=name, child=child, direction=direction)
                fam["conn_packets"].add(t[f"packets_{direction}"], connection=name, child=child,
                                        direction=direction)
        for name in sorted(children_by_conn):
            fam["established"].add(self.established.get(name, 0), connection=name)
            fam["dpd"].add(self.dpd_timeouts.get(name, 0), connection=name)
        for (name, notify), n in sorted(self.failures.items()):
            fam["failures"].add(n, connection=name, notify=notify)
        for reason, n in sorted(drops.items()):
            fam["drops"].add(n, reason=reason)
        endpoint = ike_endpoint(runtime)
        for what, n in sorted((endpoint.stats if endpoint is not None else {}).items()):
            fam["ike_counters"].add(n, event=what)
        return "".join(f.text() for f in fam.values())
