"""The PKI screen's widgets: the CA panel, the certificate table (a keyed diff) and the
selected certificate's details. Each takes a ``FolderView`` as a reactive and renders it;
none of them reads a file. Private keys appear only as file names."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from console.widgets.keyed_table import KeyedTable
from console.widgets.pki_folder import FolderView, common_name, short_left, status_of

CERT_COLUMNS = (
    ("name", "Name", 18),
    ("who", "Subject / SANs", 17),
    ("serial", "Serial", 8),
    ("expires", "Not after", 15),
    ("status", "Status", 8),
)


def _color(app, status: str) -> str:
    colors = app.theme_colors() if hasattr(app, "theme_colors") else {}
    name = {"valid": "success", "expiring": "warning", "revoked": "error", "expired": "error"}.get(status)
    return colors.get(name, "") if name else ""


def cert_rows(view: FolderView) -> dict[str, tuple[str, ...]]:
    """Row key: the serial (hex); a name may come back after a revocation, a serial never."""
    rows = {}
    for e in view.certs:
        cn = common_name(e.subject)
        others = [s for s in e.sans if s.partition(":")[2] != cn]
        who = ", ".join([cn, *others]) if others else cn
        rows[e.serial_hex] = (
            e.name, who, e.serial_hex[:8],
            f"{e.not_after:%Y-%m-%d} {short_left(e.not_after, view.now)}",
            status_of(e, view.now),
        )
    return rows


class CertTable(KeyedTable):
    """Issued certificates, keyed by serial."""

    view: reactive[FolderView | None] = reactive(None, always_update=True, init=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(CERT_COLUMNS, styler=self._style, **kwargs)

    def _style(self, column: str, value: str):
        if column != "status":
            return value
        color = _color(self.app, value)
        return Text(value, style=f"bold {color}", no_wrap=True, end="") if color else value

    def watch_view(self, view: FolderView | None) -> None:
        self.sync(cert_rows(view) if view is not None and view.state == "ok" else {})


class CaPanel(Static):
    """The CA of the folder: subject, key type, validity, CRL."""

    view: reactive[FolderView | None] = reactive(None, always_update=True)
    folder_text: reactive[str] = reactive("")
    crl_used: reactive[bool | None] = reactive(None)
    """Whether the running policy lists this crl.pem in [engine] crls (None: no peer uses certificates)."""

    def render(self) -> Text:
        colors = self.app.theme_colors() if hasattr(self.app, "theme_colors") else {}
        out = Text(no_wrap=True, overflow="ellipsis")
        v = self.view
        label = f"bold {colors.get('primary', '')}"
        if v is None:
            out.append("reading the CA folder…", style="dim")
        elif v.state == "ok" and v.ca is not None:
            out.append("CA  ", style=label)
            out.append(v.ca.subject, style="bold")
            out.append(f"  {v.ca.key_type or '?'} · until {v.ca.not_after:%Y-%m-%d} "
                       f"({short_left(v.ca.not_after, v.now)})")
            out.append("\nCRL ", style=label)
            if v.crl_next_update is not None:
                late = v.crl_next_update < v.now
                out.append(f"next update {v.crl_next_update:%Y-%m-%d %H:%M} "
                           f"({'overdue' if late else short_left(v.crl_next_update, v.now)})",
                           style=colors.get("error", "") if late else "")
                out.append(f", {v.crl_revoked} entr{'y' if v.crl_revoked == 1 else 'ies'}")
                if self.crl_used is False:
                    out.append(" · not in [engine] crls", style=colors.get("warning", ""))
            else:
                out.append(f"{v.crl_problem or 'none'} — press c to publish one", style=colors.get("warning", ""))
            revoked = sum(1 for e in v.certs if e.revoked is not None)
            out.append(f" · {len(v.certs)} issued, {revoked} revoked", style="dim")
        elif v.state == "no-ca":
            out.append("no CA  ", style=f"bold {colors.get('warning', '')}")
            out.append(v.message)
        else:
            out.append("cannot use this folder", style=f"bold {colors.get('error', '')}")
            out.append(" (below: why, and what to do)", style="dim")
        out.append("\ndir ", style=label)
        out.append(self.folder_text, style="dim")
        return out


class CertDetail(Static):
    """Everything about the selected certificate (the table only has room for a summary)."""

    view: reactive[FolderView | None] = reactive(None, always_update=True)
    serial: reactive[str | None] = reactive(None)

    def render(self) -> Text:
        v = self.view
        e = v.entry(self.serial) if v is not None and self.serial else None
        out = Text(no_wrap=True, overflow="ellipsis")
        if e is None:
            out.append("no certificate selected — i issues one" if v is not None and v.state == "ok" else "",
                       style="dim")
            return out
        status = status_of(e, v.now)
        out.append(e.name, style="bold")
        out.append(f"  {e.kind} · {e.key_type or '?'} · ")
        out.append(status, style=f"bold {_color(self.app, status)}")
        if e.revoked is not None:
            out.append(f" {e.revoked:%Y-%m-%d}" + (f" ({e.reason})" if e.reason and e.reason != "unspecified" else ""))
        out.append(f" · serial {e.serial_hex}")
        out.append(f"\nsubject {e.subject}")
        out.append(f"\nSANs    {', '.join(e.sans) or '–'}")
        out.append(f"\nvalid   {e.not_before:%Y-%m-%d %H:%M} → {e.not_after:%Y-%m-%d %H:%M} UTC")
        out.append(f"\nfiles   private/{e.name}.key (0600, never shown) · certs/{e.name}.crt", style="dim")
        return out
