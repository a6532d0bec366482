"""What the console remembers between messages: the latest status snapshot,
rates derived from consecutive snapshots, the negotiation history per IKE SA,
alerts, logs, counters and packet samples. Owned by the app, changed only on
the UI thread by the bridge's messages; screens read it.

Everything is bounded: a console left open for weeks must not grow.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from engine.events import (
    ChildSaDeleted,
    ChildSaInstalled,
    CountersSnapshot,
    DpdTimeout,
    Event,
    ExchangeReceived,
    ExchangeSent,
    IkeSaStateChanged,
    LogMessage,
    NegotiationFailed,
    PacketSample,
    PolicyApplied,
)
from engine.status import ChildSaInfo, IkeSaInfo, StatusSnapshot

HISTORY = 60
"""Rate samples kept per CHILD SA (and overall) for the sparklines."""
MAX_LOGS = 5000
MAX_EXCHANGES_PER_SA = 200
MAX_SAS_WITH_HISTORY = 500
MAX_ALERTS = 100
MAX_SAMPLES = 50
MAX_INSTALLED = 20_000


@dataclass(frozen=True)
class Alert:
    """One line of the alert strip."""

    time: float
    kind: str
    """failure, dpd, drops, runtime, cert (a certificate expiring, keyed by serial in ``connection``)."""
    connection: str
    text: str
    ike_sa: int | None = None


@dataclass
class Negotiation:
    """What the console knows of one IKE SA's exchanges."""

    ike_sa: int
    connection: str
    exchanges: deque = field(default_factory=lambda: deque(maxlen=MAX_EXCHANGES_PER_SA))
    """ExchangeSent / ExchangeReceived events, in order."""
    failure: NegotiationFailed | None = None
    state: str = "CREATED"
    state_reason: str = ""


def child_key(child: ChildSaInfo) -> str:
    """Row key of a CHILD SA: its inbound SPI (unique on this host)."""
    return f"{child.spi_in:08x}"


def ike_key(ike: IkeSaInfo) -> str:
    return str(ike.unique_id)


class Store:
    """The console's memory. See the module docstring."""

    def __init__(self) -> None:
        self.snapshot: StatusSnapshot | None = None
        self.rates: dict[str, float] = {}
        """Current bytes/s (in+out) per CHILD SA key."""
        self.rate_history: dict[str, deque] = {}
        self.total_history: deque = deque(maxlen=HISTORY)
        self.negotiations: dict[int, Negotiation] = {}
        self.alerts: deque[Alert] = deque(maxlen=MAX_ALERTS)
        self.dismissed: deque[tuple[str, str, str]] = deque(maxlen=MAX_ALERTS)
        """(kind, key, text) of alerts the admin dismissed."""
        self.logs: deque[LogMessage] = deque(maxlen=MAX_LOGS)
        self.log_serial = 0
        """Count of logs ever received (the log screen appends what is new)."""
        self.counters: CountersSnapshot | None = None
        self.samples: deque[PacketSample] = deque(maxlen=MAX_SAMPLES)
        self.sample_serial = 0
        self.installed: dict[int, ChildSaInstalled] = {}
        """Latest ChildSaInstalled per CHILD unique id (static SA facts)."""
        self.sa_by_spi: dict[int, ChildSaInstalled] = {}
        """ChildSaInstalled by inbound and outbound SPI, kept after the SA goes (older packet
        samples still name it); bounded."""
        self.last_applied: PolicyApplied | None = None
        self.pki_dir: str | None = None
        """The CA folder the admin chose on the PKI screen (None: the policy's)."""
        self._prev_bytes: dict[str, int] = {}
        self._prev_time: float | None = None

    # ------------------------------------------------------------ status
    def apply_status(self, snap: StatusSnapshot) -> None:
        prev_t = self._prev_time
        dt = (snap.time - prev_t) if prev_t is not None else 0.0
        if prev_t is not None and dt <= 0:
            # No time passed (a frozen or repeated clock): nothing to measure, the last rates stand.
            self.snapshot = snap
            return
        prev = self._prev_bytes
        new_prev: dict[str, int] = {}
        rates: dict[str, float] = {}
        hist = self.rate_history
        total = 0.0
        for ike in snap.ike_sas:
            for ch in ike.children:
                k = f"{ch.spi_in:08x}"
                b = ch.bytes_in + ch.bytes_out
                new_prev[k] = b
                if dt > 0 and k in prev:
                    r = max(0.0, (b - prev[k]) / dt)
                    rates[k] = r
                    total += r
                    h = hist.get(k)
                    if h is None:
                        if len(hist) < MAX_SAS_WITH_HISTORY:
                            hist[k] = deque((r,), maxlen=HISTORY)
                    else:
                        h.append(r)
        for k in [k for k in hist if k not in new_prev]:
            del hist[k]
        if dt > 0:
            self.total_history.append(total)
        self.rates = rates
        self._prev_bytes = new_prev
        self._prev_time = snap.time
        self.snapshot = snap

    def ike(self, unique_id: int) -> IkeSaInfo | None:
        if self.snapshot is None:
            return None
        for i in self.snapshot.ike_sas:
            if i.unique_id == unique_id:
                return i
        return None

    # ------------------------------------------------------------ events
    def _negotiation(self, ike_sa: int, connection: str) -> Negotiation:
        n = self.negotiations.get(ike_sa)
        if n is None:
            n = self.negotiations[ike_sa] = Negotiation(ike_sa, connection)
            if len(self.negotiations) > MAX_SAS_WITH_HISTORY:
                del self.negotiations[next(iter(self.negotiations))]
        return n

    def apply_events(self, events: tuple[Event, ...]) -> set[str]:
        """Fold events in; returns which parts changed (logs, negotiations, alerts, counters, samples, sas)."""
        parts: set[str] = set()
        for ev in events:
            if isinstance(ev, LogMessage):
                self.logs.append(ev)
                self.log_serial += 1
                parts.add("logs")
            elif isinstance(ev, (ExchangeSent, ExchangeReceived)):
                self._negotiation(ev.ike_sa, ev.connection).exchanges.append(ev)
                parts.add("negotiations")
            elif isinstance(ev, IkeSaStateChanged):
                n = self._negotiation(ev.ike_sa, ev.connection)
                n.state = ev.new.value
                n.state_reason = ev.reason
                parts.update(("negotiations", "sas"))
            elif isinstance(ev, NegotiationFailed):
                self._negotiation(ev.ike_sa, ev.connection).failure = ev
                self.alerts.append(Alert(self._now(), "failure", ev.connection,
                                         f"{ev.connection} {ev.notify}", ev.ike_sa))
                parts.update(("negotiations", "alerts"))
            elif isinstance(ev, DpdTimeout):
                self.alerts.append(Alert(self._now(), "dpd", ev.connection,
                                         f"{ev.connection} DPD timeout ({ev.action})", ev.ike_sa))
                parts.add("alerts")
            elif isinstance(ev, ChildSaInstalled):
                # The tunnel is up: its earlier failures and DPD timeouts are history.
                if self.clear_alerts(ev.connection, ("failure", "dpd")):
                    parts.add("alerts")
                self.installed[ev.unique_id] = ev
                if len(self.installed) > MAX_INSTALLED:
                    del self.installed[next(iter(self.installed))]
                self.sa_by_spi[ev.spi_in] = self.sa_by_spi[ev.spi_out] = ev
                while len(self.sa_by_spi) > 2 * MAX_INSTALLED:
                    del self.sa_by_spi[next(iter(self.sa_by_spi))]
                parts.add("sas")
            elif isinstance(ev, ChildSaDeleted):
                self.installed.pop(ev.unique_id, None)
                parts.add("sas")
            elif isinstance(ev, CountersSnapshot):
                self.counters = ev
                parts.update(("counters", "alerts"))
            elif isinstance(ev, PacketSample):
                self.samples.append(ev)
                self.sample_serial += 1
                parts.add("samples")
            elif isinstance(ev, PolicyApplied):
                self.last_applied = ev
                parts.add("policy")
        return parts

    def add_alert(self, kind: str, text: str, connection: str = "") -> None:
        self.alerts.append(Alert(self._now(), kind, connection, text))

    def clear_alerts(self, connection: str, kinds: tuple[str, ...]) -> bool:
        """Forget ``connection``'s alerts of these kinds (the condition is gone). Returns whether any went."""
        kept = [a for a in self.alerts if not (a.connection == connection and a.kind in kinds)]
        if len(kept) == len(self.alerts):
            return False
        self.alerts.clear()
        self.alerts.extend(kept)
        return True

    def dismiss(self, alerts: list[Alert]) -> None:
        """The admin has seen these: they go, and a recomputation (certificates) does not bring them back."""
        gone = set(map(id, alerts))
        for a in alerts:
            self.dismissed.append((a.kind, a.connection, a.text))
        kept = [a for a in self.alerts if id(a) not in gone]
        self.alerts.clear()
        self.alerts.extend(kept)

    def shown_alerts(self, limit: int = 4) -> list[Alert]:
        """Newest first, one per (kind, connection): what the alert strip shows."""
        out: list[Alert] = []
        seen = set()
        for a in reversed(self.alerts):
            key = (a.kind, a.connection)
            if key in seen:
                continue
            seen.add(key)
            out.append(a)
            if len(out) >= limit:
                break
        return out

    def replace_alerts(self, kind: str, texts: dict[str, str]) -> bool:
        """Make the alerts of ``kind`` exactly ``texts`` (key -> text; the key goes in ``connection``).

        Unchanged ones keep their place, so a recomputation does not push newer alerts aside.
        Returns whether anything changed.
        """
        current = {a.connection: a.text for a in self.alerts if a.kind == kind}
        if current == texts:
            return False
        kept = [a for a in self.alerts if a.kind != kind or texts.get(a.connection) == a.text]
        now = self._now()
        new = [Alert(now, kind, key, text) for key, text in texts.items()
               if current.get(key) != text and (kind, key, text) not in self.dismissed]
        self.alerts.clear()
        self.alerts.extend(kept + new)
        return True

    def _now(self) -> float:
        # The runtime's clock (a fake runtime's is virtual), so ages agree with what it reports.
        return self.snapshot.time if self.snapshot is not None else time.time()

    # ------------------------------------------------------------ derived
    def drops(self) -> dict[str, int]:
        """Drops by reason: global counters plus every SA's inbound drops."""
        out: dict[str, int] = {}
        if self.counters is not None:
            for reason, n in self.counters.drops:
                out[reason] = out.get(reason, 0) + n
            for sa in self.counters.sas:
                for reason, n in sa.drops:
                    out[reason] = out.get(reason, 0) + n
        elif self.snapshot is not None:
            for ike in self.snapshot.ike_sas:
                for ch in ike.children:
                    for reason, n in ch.drops:
                        out[reason] = out.get(reason, 0) + n
        return out

    def totals(self) -> dict[str, int]:
        """Encrypted/decrypted bytes and packets over all SAs."""
        t = {"bytes_out": 0, "packets_out": 0, "bytes_in": 0, "packets_in": 0}
        if self.snapshot is not None:
            for ike in self.snapshot.ike_sas:
                for ch in ike.children:
                    t["bytes_out"] += ch.bytes_out
                    t["packets_out"] += ch.packets_out
                    t["bytes_in"] += ch.bytes_in
                    t["packets_in"] += ch.packets_in
        return t
