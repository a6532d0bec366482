"""The PKI screen's modal forms: issue a certificate, initialize a CA, choose the CA
folder, and the CA key's passphrase when it is encrypted.

Each form checks what it can without touching a file (names, SAN syntax, numbers)
and says what is wrong inline; it dismisses with a request dataclass, or None when
cancelled. The passphrase form dismisses with a ``Secret`` and never shows what
was typed.
"""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.actions import SkipAction
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from engine.pki.ca import KEY_TYPES, parse_san
from engine.pki.errors import PkiError
from engine.secret import Secret

from console.widgets.fields import Choice, Field, focus_now
from console.widgets.mounting import QuietWhenRemoved
from console.widgets.pki_folder import InitRequest, IssueRequest

FORM_CSS = """
PkiForm {
    align: center middle;
    background: $background 60%;
}
PkiForm #dialog {
    width: 70;
}
PkiForm .pki-row {
    height: 1;
    margin-bottom: 1;
}
PkiForm .pki-label {
    width: 12;
    color: $text-muted;
}
PkiForm .pki-row Input, PkiForm .pki-row Select {
    width: 1fr;
}
PkiForm #pki-form-error {
    color: $error;
    height: auto;
    margin-bottom: 1;
    display: none;
}
PkiForm #pki-form-error.-shown {
    display: block;
}
PkiForm #pki-form-hint {
    color: $text-muted;
    height: auto;
    margin-bottom: 1;
}
"""


class PkiForm(QuietWhenRemoved, ModalScreen):
    """Base of the forms: title, rows of label + field, an inline error, OK / Cancel."""

    DEFAULT_CSS = FORM_CSS
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="pki_form.cancel"),
        # Priority, as the policy dialogs' Enter: the form answers in turn (behind the keys typed before
        # Enter), so the keys typed after it go to the PKI screen, not into the closing form's field.
        Binding("enter", "enter", "OK", show=False, priority=True, id="pki_form.accept"),
    ]
    FORM_TITLE = ""
    OK = "OK"
    HINT = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.FORM_TITLE, id="dialog-title", markup=False)
            if self.HINT:
                yield Static(self.HINT, id="pki-form-hint", markup=False)
            yield from self.fields()
            yield Static("", id="pki-form-error", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button(f"{self.OK} (enter)", id="ok", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def fields(self) -> ComposeResult:
        yield from ()

    @staticmethod
    def row(label: str, widget) -> Horizontal:
        return Horizontal(Label(label, classes="pki-label"), widget, classes="pki-row")

    def on_mount(self) -> None:
        inputs = self.query(Input)
        if inputs:
            focus_now(inputs.first())

    def show_error(self, text: str) -> None:
        box = self.query_one("#pki-form-error", Static)
        box.update(text)
        box.set_class(bool(text), "-shown")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self.submit()
        else:
            self._dismiss_once(None)

    def action_cancel(self) -> None:
        self._dismiss_once(None)

    def action_enter(self) -> None:
        focused = self.focused
        if focused is not None and any(isinstance(n, Select) for n in (focused, *focused.ancestors)):
            raise SkipAction()  # Enter opens a choice's list, or picks from it
        self._enter_behind(focused)

    def _enter_behind(self, widget) -> None:
        (widget or self).call_later(self._enter_if_current, widget)

    def _enter_if_current(self, queued_at) -> None:
        if not self.is_active:  # not twice (Enter, Enter)
            return
        focused = self.focused
        if focused is not None and focused is not queued_at:
            self._enter_behind(focused)  # focus moved meanwhile (Tab): behind the keys that went there
            return
        if isinstance(focused, Button) and focused.id == "cancel":
            self._dismiss_once(None)
        else:
            self.submit()

    def _dismiss_once(self, result) -> None:
        # Enter, Enter in a burst brings two Submitted: a second dismiss would run the callback again
        # and pop the screen under the form (the PKI screen, alone in its mode: the console died).
        if self.is_active:
            self.dismiss(result)

    def value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def submit(self) -> None:
        try:
            result = self.collect()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self._dismiss_once(result)

    def collect(self):
        """The request, or ValueError saying what to fix."""
        raise NotImplementedError


# engine.pki.ca's rule for a certificate's file name (the CN by default), checked before asking it.
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


def _days(text: str, what: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise ValueError(f"{what}: a whole number of days, e.g. 730") from None
    if days < 1:
        raise ValueError(f"{what}: at least 1 day")
    return days


class IssueForm(PkiForm):
    """Issue a server or client certificate: CN, SANs, kind, key type, days."""

    FORM_TITLE = "Issue a certificate"
    OK = "Issue"
    HINT = "The CN is added as a SAN when it is a host name, address or e-mail. The key is written 0600."

    def __init__(self, folder: str, previous: IssueRequest | None = None, error: str = "") -> None:
        super().__init__()
        self.folder = folder
        self.previous = previous or IssueRequest(cn="")
        self.error = error

    def fields(self) -> ComposeResult:
        p = self.previous
        yield self.row("CN", Field(p.cn, placeholder="gw.example.org or alice@example.org", id="pki-cn",
                                   compact=True))
        yield self.row("SANs", Field(", ".join(p.sans), placeholder="optional: DNS:vpn.example.org, IP:192.0.2.1",
                                     id="pki-sans", compact=True))
        yield self.row("Kind", Choice([("server (serverAuth)", "server"), ("client (clientAuth)", "client")],
                                      value=p.kind, allow_blank=False, id="pki-kind", compact=True))
        yield self.row("Key type", Choice([("the CA's", "ca"), *((k, k) for k in KEY_TYPES)],
                                          value=p.key_type or "ca", allow_blank=False, id="pki-key-type",
                                          compact=True))
        yield self.row("Days", Field(str(p.days), id="pki-days", compact=True, type="integer"))

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#dialog-title", Static).update(f"Issue a certificate — CA in {self.folder}")
        if self.error:
            self.show_error(self.error)

    def collect(self) -> IssueRequest:
        cn = self.value("pki-cn")
        if not cn:
            raise ValueError("CN: give a host name, address or e-mail (e.g. gw.example.org)")
        if not _FILE_NAME.match(cn) or cn == "ca":
            raise ValueError("CN: it also names the files (certs/CN.crt), so letters, digits and . _ @ + - only, "
                             "not 'ca'; for another subject use: ipsec-console pki issue --name")
        sans = tuple(s.strip() for s in self.value("pki-sans").replace(";", ",").split(",") if s.strip())
        for s in sans:
            try:
                parse_san(s)
            except PkiError as exc:
                raise ValueError(f"SANs: {exc}") from None
        kind = self.query_one("#pki-kind", Select).value
        key_type = self.query_one("#pki-key-type", Select).value
        return IssueRequest(cn=cn, sans=sans, kind=str(kind), key_type=None if key_type == "ca" else str(key_type),
                            days=_days(self.value("pki-days"), "Days"))


class InitCaForm(PkiForm):
    """Create a CA in the folder: its name (DN or plain CN), key type, days."""

    FORM_TITLE = "Initialize a CA"
    OK = "Create"
    HINT = ("Writes ca.crt, private/ca.key (0600) and index.toml. For a CA key encrypted with a "
            "passphrase use: ipsec-console pki init-ca --passphrase-file FILE")

    def __init__(self, folder: str, previous: InitRequest | None = None, error: str = "") -> None:
        super().__init__()
        self.folder = folder
        self.previous = previous or InitRequest(name="")
        self.error = error

    def fields(self) -> ComposeResult:
        p = self.previous
        yield self.row("Name", Field(p.name, placeholder="a DN: O=Example, CN=Example VPN CA", id="pki-name",
                                     compact=True))
        yield self.row("Key type", Choice([(k, k) for k in KEY_TYPES], value=p.key_type, allow_blank=False,
                                          id="pki-ca-key-type", compact=True))
        yield self.row("Days", Field(str(p.days), id="pki-ca-days", compact=True, type="integer"))

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#dialog-title", Static).update(f"Initialize a CA in {self.folder}")
        if self.error:
            self.show_error(self.error)

    def collect(self) -> InitRequest:
        name = self.value("pki-name")
        if not name:
            raise ValueError("Name: a DN such as O=Example, CN=Example VPN CA, or a plain name")
        return InitRequest(name=name, key_type=str(self.query_one("#pki-ca-key-type", Select).value),
                           days=_days(self.value("pki-ca-days"), "Days"))


class FolderForm(PkiForm):
    """Choose another CA folder for this session (empty: back to the policy's)."""

    FORM_TITLE = "CA folder"
    OK = "Open"
    HINT = ("For this session. Empty: the policy's folder ([engine] pki, else pki/ next to the policy file). "
            "A relative path starts from the current folder; ~ is your home.")

    def __init__(self, current: str, default: str) -> None:
        super().__init__()
        self.current = current
        self.default = default

    def fields(self) -> ComposeResult:
        yield self.row("Folder", Field(self.current, placeholder=f"the policy's: {self.default}", id="pki-folder",
                                       compact=True))

    def collect(self) -> str:
        return self.value("pki-folder")


class PassphraseForm(PkiForm):
    """The CA key's passphrase (never drawn; not kept after the operation)."""

    OK = "Unlock"

    def __init__(self, what: str, problem: str) -> None:
        super().__init__()
        self.what = what
        self.problem = problem

    def fields(self) -> ComposeResult:
        yield self.row("Passphrase", Field(password=True, id="pki-passphrase", compact=True))

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#dialog-title", Static).update(f"The CA key is encrypted: passphrase to {self.what}")
        self.show_error(self.problem)

    def collect(self) -> Secret:
        raw = self.query_one("#pki-passphrase", Input).value
        if not raw:
            raise ValueError("the passphrase is empty")
        return Secret(raw)
