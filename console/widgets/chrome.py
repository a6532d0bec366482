"""The top bar, the lab banner and the alert strip shown on every screen."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

from engine.status import StatusSnapshot

from console import fmt
from console.store import Alert


def _esc(text: str) -> str:
    """Escape Textual markup in data (IDs, names) before embedding it in markup."""
    return text.replace("[", r"\[")


class TopBar(Static):
    """Product name, what the console runs on, a one-glance summary and the time."""

    snapshot: reactive[StatusSnapshot | None] = reactive(None, always_update=True)
    screen_title: reactive[str] = reactive("")

    def __init__(self, label: str, kind: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runtime_label = label
        self.kind = kind

    mode: reactive[str] = reactive("")

    NAV = (("1", "dashboard", "Dash"), ("2", "negotiations", "Nego"), ("3", "policies", "Policy"),
           ("4", "logs", "Logs"), ("5", "packets", "Pkts"), ("6", "pki", "PKI"))

    def render(self) -> str:
        snap = self.snapshot
        wide = self.size.width >= 120
        nav = []
        for key, mode, label in self.NAV:
            if mode == self.mode:
                nav.append(f"[reverse $primary] {key} {label} [/]")
            else:
                nav.append(f"[$accent]{key}[/][dim]{label}[/]")
        parts = ["[b]ipsec-console[/b]", " ".join(nav)]
        if self.screen_title and not self.mode:
            parts.append(f"[dim]│[/] [b $primary]{_esc(self.screen_title)}[/]")
        if self.kind != "lab":  # the lab banner already says it, louder
            parts.append(f"[dim]│[/] {_esc(self.runtime_label)}")
        if snap is not None:
            states = [c.state for c in snap.connections]
            up, failing = states.count("up"), states.count("failing")
            children = sum(len(i.children) for i in snap.ike_sas)
            summary = f"[$success]{up} up[/]"
            if failing:
                summary += f" [$error]{failing} failing[/]"
            if wide:
                summary += f" [dim]· {len(snap.ike_sas)} IKE · {children} CHILD[/]"
            parts.append(f"[dim]│[/] {summary} [dim]│[/] {fmt.clock(snap.time)}")
        return " ".join(parts)


class LabBanner(Static):
    """A loud, unmistakable banner: this is a lab, not a production gateway."""

    def __init__(self, label: str, **kwargs) -> None:
        text = label if label.upper().startswith("LAB") else f"LAB — {label}"
        super().__init__(f"▲ {_esc(text)} ▲", **kwargs)


class AlertStrip(Static):
    """Failed negotiations, DPD timeouts and drops by reason, newest first."""

    alerts: reactive[tuple[Alert, ...]] = reactive((), always_update=True)
    drops: reactive[dict] = reactive(dict, always_update=True)

    def render(self) -> str:
        items = []
        seen = set()
        for a in reversed(self.alerts):
            key = (a.kind, a.connection)
            if key in seen:
                continue
            seen.add(key)
            color = "$error" if a.kind in ("failure", "runtime") else "$warning"
            items.append(f"[{color}]✗ {_esc(a.text)}[/]" if a.kind != "dpd" else f"[{color}]⏱ {_esc(a.text)}[/]")
            if len(items) >= 4:
                break
        drops = {k: v for k, v in self.drops.items() if v}
        lines = ["  ".join(items)] if items else ["[$success]✓ no failed negotiation, no DPD timeout[/]"]
        if drops:
            lines.append("[$warning]drops:[/] " + "  ".join(f"{k} {v}" for k, v in sorted(drops.items())))
        return "\n".join(lines)
