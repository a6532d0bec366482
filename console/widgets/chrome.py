"""The top bar, the lab banner and the alert strip shown on every screen."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.markup import escape as markup_escape
from textual.reactive import reactive
from textual.widgets import Static

from engine.printable import escape
from engine.status import StatusSnapshot

from console import fmt
from console.store import Alert


SHORT_NOTIFY = {
    "NO_PROPOSAL_CHOSEN": "NO_PROP",
    "TS_UNACCEPTABLE": "TS_UNACCEPT",
    "AUTHENTICATION_FAILED": "AUTH_FAILED",
    "INVALID_KE_PAYLOAD": "INVALID_KE",
}
"""Notify names as the narrow layouts show them (the full name is in the Negotiations screen)."""


def _esc(text: str) -> str:
    """Data (IDs, names, a peer's text) made inert before embedding it in markup: controls written as
    escapes (Textual 8 passes ESC to the terminal), markup escaped."""
    text = escape(text)
    # Textual's escape doubles a trailing backslash, and its parser then still reads "\\[/]" as an
    # escaped bracket (the closing tag shown, the colour running on): trailing backslashes are kept
    # as they are, a space after them.
    body = text.rstrip("\\")
    tail = text[len(body):]
    return markup_escape(body) + (tail + " " if tail else "")


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
           ("4", "logs", "Logs"), ("5", "packets", "Pkts"), ("6", "pki", "PKI"),
           ("7", "clients", "Clients"))

    def render(self) -> Text:
        """Brand, navigation, what it runs on, summary, clock. The summary and the clock always show:
        at narrow widths the runtime label is shortened first, then the brand."""
        snap = self.snapshot
        width = (self.size.width or 122) - 2
        wide = width >= 118
        colors = self.app.theme_colors() if hasattr(self.app, "theme_colors") else {}
        primary, accent = colors.get("primary", ""), colors.get("accent", "")
        def navigation(labels: bool) -> Text:
            nav = Text()
            for key, mode, label in self.NAV:
                if nav:
                    nav.append(" ")
                click = Style.from_meta({"@click": f"app.switch_mode('{mode}')"})  # a mouse (or browser) too
                if mode == self.mode:
                    nav.append(f" {key} {label} ", style=Style.parse(f"reverse {primary}") + click)
                else:
                    nav.append(key, style=Style.parse(accent) + click)
                    if labels:
                        nav.append(label, style=Style.parse("dim") + click)
            return nav

        nav = navigation(labels=True)
        right = Text()
        if snap is not None:
            states = [c.state for c in snap.connections]
            up, failing = states.count("up"), states.count("failing")
            children = sum(len(i.children) for i in snap.ike_sas)
            right.append(" │ ", style="dim")
            right.append(f"{up} up", style=colors.get("success", ""))
            if failing:
                right.append(f" {failing} failing", style=colors.get("error", ""))
            if wide:
                right.append(f" · {len(snap.ike_sas)} IKE · {children} CHILD", style="dim")
            right.append(" │ ", style="dim")
            right.append(fmt.clock(snap.time))
        if self.screen_title and not self.mode:
            # A long title (SA detail: a connection's name) is shortened, not the clock pushed off.
            title = self.screen_title
            fits = width - nav.cell_len - right.cell_len - 3
            name = title.partition(": ")[2] or title
            if fits < min(len(name), 12):  # 80 columns, SA detail: its name over the screens' labels
                nav = navigation(labels=False)
                fits = width - nav.cell_len - right.cell_len - 3
            head, sep, tail = title.partition(": ")
            for shorter in ((f"{head.split()[0]}: {tail}", tail) if sep and head.strip() else ()):
                if len(title) <= fits:
                    break
                title = shorter  # "SA detail: NAME", then "SA: NAME", then "NAME": the name stays longest
            if len(title) > fits:
                title = title[:max(0, fits - 1)] + "…" if fits > 1 else ""
            if title:
                nav.append(" │ ", style="dim")
                nav.append(title, style=f"bold {primary}")
        room = width - nav.cell_len - right.cell_len
        brand = Text("")
        for name in ("ipsec-console ", "ipsec "):
            if room >= len(name):
                brand = Text(name, style="bold")
                break
        room -= brand.cell_len
        label = Text()
        if self.kind != "lab" and room > 10:  # the lab banner already says it, louder
            label.append(" │ ", style="dim")
            label.append(_shortened(self.runtime_label, room - 3))
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append_text(brand)
        out.append_text(nav)
        out.append_text(label)
        out.append_text(right)
        return out


def _shortened(label: str, room: int) -> str:
    """``label`` in ``room`` cells. "attached — /tmp/lab/ours-left/control.sock" keeps the end of its
    path (the socket's and its folder's names tell daemons apart), not its start ("attached — /tmp/l…")."""
    if len(label) <= room:
        return label
    head, sep, tail = label.partition(" — ")
    keep = room - len(head) - len(sep) - 1
    if sep and "/" in tail and keep >= 8:  # a path: its end is what tells it apart
        return head + sep + "…" + tail[len(tail) - keep:]
    return label[: max(0, room - 1)] + "…"


class LabBanner(Static):
    """A loud, unmistakable banner: this is a lab, not a production gateway."""

    def __init__(self, label: str, **kwargs) -> None:
        text = label if label.upper().startswith("LAB") else f"LAB — {label}"
        super().__init__(f"▲ {_esc(text)} ▲", **kwargs)


class AlertStrip(Static):
    """Failed negotiations, DPD timeouts, runtime trouble and expiring certificates, newest first,
    each with its age; drops by reason below. The dashboard dismisses them (x, X)."""

    alerts: reactive[tuple[Alert, ...]] = reactive((), always_update=True)
    drops: reactive[dict] = reactive(dict, always_update=True)
    now: float = 0.0

    def render(self) -> str:
        items = self._items(short=False)
        # Short notify names only when the full ones do not fit the line (not below a fixed width).
        if sum(len(plain) + 2 for _, plain in items) - 2 > self.size.width:
            items = self._items(short=True)
        items = [markup for markup, _ in items]
        drops = {k: v for k, v in self.drops.items() if v}
        lines = ["  ".join(items)] if items else ["[$success]✓ no failed negotiation, no DPD timeout[/]"]
        if drops:
            lines.append("[$warning]drops:[/] " + "  ".join(f"{k} {v}" for k, v in sorted(drops.items())))
        return "\n".join(lines)

    def _items(self, *, short: bool) -> list[tuple[str, str]]:
        """(markup, plain text) of each alert."""
        items = []
        for a in self.alerts:
            color = "$error" if a.kind in ("failure", "runtime") else "$warning"
            mark = "⏱" if a.kind == "dpd" else "✗"
            seconds = self.now - a.time if self.now else 0.0
            age = fmt.duration(seconds) if seconds >= 1 else ""
            text = a.text
            if short:
                for long, name in SHORT_NOTIFY.items():
                    text = text.replace(long, name)
            items.append((f"[{color}]{mark} {_esc(text)}[/]" + (f" [dim]{age}[/]" if age else ""),
                          f"{mark} {text}" + (f" {age}" if age else "")))
        return items
