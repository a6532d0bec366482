"""The PKI screen (key 6): the CA of a CA folder, what it issued, and the actions
of ``ipsec-console pki`` — issue, revoke (confirmed), re-sign the CRL, create a
CA, open another folder.

The folder is ``[engine] pki`` of the running policy, else ``pki/`` next to the
policy file, unless the admin chose another one here (kept in the store for the
session, so the dashboard's expiry warnings follow it). Every file operation runs
in a thread worker (``console.widgets.pki_folder``); the screen only receives
immutable ``FolderView`` readings and hands them down to its widgets. Private
keys are written 0600 by engine.pki and appear here as file names only.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Static
from textual.worker import Worker, WorkerState

from engine.pki.ca import utc_now
from engine.policy.model import Policy

from console.screens.base import ConsoleScreen
from console.widgets.chrome import TopBar
from console.widgets.pki_folder import (
    Clock,
    FolderView,
    InitRequest,
    IssueRequest,
    Outcome,
    as_utc,
    change,
    crl_in_policy,
    load_folder,
    pki_dir_for,
    shown_path,
)
from console.widgets.pki_forms import FolderForm, InitCaForm, IssueForm, PassphraseForm
from console.widgets.pki_table import CaPanel, CertDetail, CertTable

PKI_CSS = """
PkiScreen #pki-ca, PkiScreen #pki-detail {
    text-wrap: nowrap;
    text-overflow: ellipsis;
}
PkiScreen #pki-ca {
    height: 3;
    padding: 0 1;
    background: $surface;
}
PkiScreen #pki-certs {
    height: 1fr;
    min-height: 4;
}
PkiScreen #pki-detail {
    height: 5;
    padding: 0 1;
    background: $surface;
}
PkiScreen #pki-empty {
    display: none;
    height: 1fr;
    padding: 1 2;
}
PkiScreen #pki-empty-text {
    height: auto;
    margin-bottom: 1;
}
PkiScreen #pki-empty-buttons {
    height: auto;
}
PkiScreen #pki-empty-buttons Button {
    margin-right: 2;
}
PkiScreen.-no-table #pki-certs, PkiScreen.-no-table #pki-detail {
    display: none;
}
PkiScreen.-no-table #pki-empty {
    display: block;
}
PkiScreen.-error #pki-init, PkiScreen.-no-ca #pki-retry {
    display: none;
}
"""

# Actions that need a CA in the folder, and the one that needs its absence.
_NEED_CA = ("issue", "revoke", "crl")


class PkiScreen(ConsoleScreen):
    """The CA folder. i issue, r revoke (confirmed), c CRL, f folder, n initialize a CA, l reload."""

    TITLE_TEXT = "PKI"
    # Highlighted in the navigation strip once the top bar lists the PKI mode; titled otherwise.
    MODE = "pki" if any(mode == "pki" for _, mode, _ in TopBar.NAV) else ""
    DEFAULT_CSS = PKI_CSS
    BINDINGS = [
        Binding("i", "issue", "Issue", id="pki.issue"),
        Binding("r", "revoke", "Revoke", id="pki.revoke"),
        Binding("c", "crl", "CRL", id="pki.crl"),
        Binding("n", "init_ca", "Init CA", id="pki.init_ca"),
        Binding("f", "folder", "Folder", id="pki.folder"),
        Binding("l", "reload", "Reload", id="pki.reload"),
    ]

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__()
        self._clock = clock
        self.policy: Policy | None = None
        self.view: FolderView | None = None
        self._policy_pending = False
        self._pending_action: str | None = None

    # ------------------------------------------------------------- layout
    def body(self) -> ComposeResult:
        yield CaPanel(id="pki-ca")
        table = CertTable(id="pki-certs")
        table.border_title = "Certificates"
        yield table
        yield CertDetail(id="pki-detail")
        with Vertical(id="pki-empty"):
            yield Static("", id="pki-empty-text", markup=False)
            with Horizontal(id="pki-empty-buttons"):
                yield Button("Initialize a CA here (n)", id="pki-init", variant="primary", compact=True)
                yield Button("Read it again (l)", id="pki-retry", compact=True)
                yield Button("Another folder (f)", id="pki-other", compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        self._load_policy()

    @property
    def clock(self) -> Clock:
        """The injected clock, else the app's (tests freeze it), else the wall clock."""
        return self._clock or getattr(self.app, "clock", None) or utc_now

    def folder(self) -> Path:
        return pki_dir_for(self.policy, self.app.store.pki_dir)

    # ------------------------------------------------------------- data in
    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        if "policy" in parts:
            self._load_policy()  # the folder may have moved with the policy, or files changed meanwhile

    def _load_policy(self) -> None:
        if self._policy_pending:
            return
        self._policy_pending = True
        self.app.run_command("load policy", self.app.runtime.policy, on_done=self._policy_loaded,
                             on_error=self._policy_failed)

    def _policy_loaded(self, result: tuple[Policy, str]) -> None:
        self._policy_pending = False
        self.policy = result[0]
        self.reload()

    def _policy_failed(self, exc: BaseException) -> bool:
        self._policy_pending = False
        self.reload()  # the admin's folder, or pki/ here: still worth showing
        return False  # the bridge reports the failure

    def reload(self) -> None:
        self._read(self.folder())

    @work(thread=True, group="pki", exclusive=True, exit_on_error=False, name="read CA folder")
    def _read(self, d: Path) -> FolderView:
        return load_folder(d, self.clock())

    @work(thread=True, group="pki-change", exit_on_error=False, name="change CA folder")
    def _change(self, d: Path, what: str, request, passphrase=None) -> tuple[str, object, Outcome]:
        # Not exclusive: a change is never abandoned half-way; pki_folder.LOCK serialises them.
        return what, request, change(d, self.clock, what, request, passphrase)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group not in ("pki", "pki-change"):
            return
        event.stop()
        if event.state == WorkerState.SUCCESS:
            if worker.group == "pki":
                self.show(worker.result)
            else:
                self._changed(*worker.result)
        elif event.state == WorkerState.ERROR:
            err = worker.error
            self.notify(f"{type(err).__name__}: {err}", title="PKI", severity="error", timeout=10)
            if worker.group == "pki":
                self.show(FolderView(self.folder(), "error", as_utc(self.clock()),
                                     f"could not read the folder: {type(err).__name__}: {err}",
                                     generation=(self.view.generation if self.view else 0)))

    # ------------------------------------------------------------- data down
    def show(self, view: FolderView) -> None:
        if self.view is not None and view.generation < self.view.generation:
            return  # an older reading finished late
        self.view = view
        shown = shown_path(view.dir, self.policy)
        panel = self.query_one(CaPanel)
        panel.set_reactive(CaPanel.folder_text, shown)
        panel.set_reactive(CaPanel.crl_used, crl_in_policy(view.dir, self.policy))
        panel.view = view
        table = self.query_one(CertTable)
        table.view = view
        detail = self.query_one(CertDetail)
        detail.view = view
        detail.serial = table.selected_key
        has_table = view.state == "ok"
        self.set_class(not has_table, "-no-table")
        self.set_class(view.state == "no-ca", "-no-ca")
        self.set_class(view.state == "error", "-error")
        if view.state == "no-ca":
            text = (f"No CA in {shown} yet: {view.message}.\n\nA CA issues the certificates peers "
                    'authenticate with (auth = "pubkey") and revokes them through its CRL. Create one here '
                    "(the same as ipsec-console pki init-ca), or open the folder that holds yours.")
        else:
            text = view.message
        self.query_one("#pki-empty-text", Static).update(text)
        if has_table and self.focused is None:
            table.focus()
        self.refresh_bindings()
        if self._pending_action is not None:
            action, self._pending_action = self._pending_action, None
            self.request(action)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "pki-certs":
            self.query_one(CertDetail).serial = event.row_key.value if event.row_key else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.view.state if self.view is not None else None
        if action in _NEED_CA:
            return state == "ok"
        if action == "init_ca":
            return state == "no-ca"
        return True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        {"pki-init": self.action_init_ca, "pki-retry": self.action_reload,
         "pki-other": self.action_folder}[event.button.id]()

    # ------------------------------------------------------------- actions
    def request(self, action: str) -> None:
        """Run an action from elsewhere (the command palette): after the first reading if none yet."""
        if self.view is None:
            self._pending_action = action
            return
        getattr(self, f"action_{action}")()

    def _shown(self) -> str:
        return shown_path(self.folder(), self.policy)

    def _need_ca(self) -> bool:
        if self.view is not None and self.view.state == "ok":
            return True
        if self.view is not None and self.view.state == "no-ca":
            self.notify(f"No CA in {self._shown()}: press n to create one, or f to open another folder",
                        severity="warning")
        else:
            self.notify("This folder cannot be used: press f to open another one", severity="warning")
        return False

    def action_issue(self, previous: IssueRequest | None = None, error: str = "") -> None:
        if not self._need_ca():
            return
        d = self.folder()

        def answered(req: IssueRequest | None) -> None:
            if req is not None:
                self._change(d, "issue", req)

        self.app.push_screen(IssueForm(self._shown(), previous, error), answered)

    def action_revoke(self) -> None:
        if not self._need_ca():
            return
        table = self.query_one(CertTable)
        entry = self.view.entry(table.selected_key) if table.selected_key else None
        if entry is None:
            self.notify("Select a certificate first", severity="warning")
            return
        if entry.revoked is not None:
            self.notify(f"{entry.name} was already revoked on {entry.revoked:%Y-%m-%d}", severity="warning")
            return
        from console.screens.confirm import ConfirmScreen

        d = self.folder()

        def answered(ok: bool | None) -> None:
            if ok:
                self._change(d, "revoke", entry.serial_hex)

        self.app.push_screen(ConfirmScreen(
            f"Revoke {entry.name}?",
            f"{entry.subject}, serial {entry.serial_hex}. It goes on the CRL (crl.pem is re-signed now); peers "
            "refuse it once they load that CRL. This cannot be undone.", yes="Revoke", danger=True), answered)

    def action_crl(self) -> None:
        if self._need_ca():
            self._change(self.folder(), "crl", None)

    def action_init_ca(self, previous: InitRequest | None = None, error: str = "") -> None:
        if self.view is not None and self.view.state == "ok":
            self.notify(f"{self._shown()} already holds a CA", severity="warning")
            return
        if self.view is not None and self.view.state == "error":
            self.notify("This folder cannot be used: press f to open another one", severity="warning")
            return
        d = self.folder()

        def answered(req: InitRequest | None) -> None:
            if req is not None:
                self._change(d, "init", req)

        self.app.push_screen(InitCaForm(self._shown(), previous, error), answered)

    def action_folder(self) -> None:
        def answered(value: str | None) -> None:
            if value is None:
                return
            self.app.store.pki_dir = str(Path(value).expanduser().absolute()) if value else None
            self.view = None  # a new folder: its first reading is shown whatever its number
            self.reload()
            self.app.check_cert_expiry()

        self.app.push_screen(FolderForm(self.app.store.pki_dir or "", shown_path(pki_dir_for(self.policy), self.policy)),
                             answered)

    def action_reload(self) -> None:
        self._load_policy()

    # ------------------------------------------------------------- results
    def _changed(self, what: str, request, outcome: Outcome) -> None:
        self.show(outcome.view)
        if outcome.done:
            self.notify(outcome.done, title="PKI")
            if outcome.serial:
                table = self.query_one(CertTable)
                try:
                    table.move_cursor(row=table.get_row_index(outcome.serial))
                except Exception:  # the row is not there (a reading raced ahead): nothing to select
                    pass
            self.app.check_cert_expiry()
        elif outcome.needs_passphrase:
            d = outcome.view.dir

            def answered(secret) -> None:
                if secret is not None:
                    self._change(d, what, request, secret)

            verb = {"issue": "issue", "revoke": "revoke", "crl": "sign the CRL"}.get(what, what)
            self.app.push_screen(PassphraseForm(verb, outcome.error), answered)
        elif what == "issue":
            self.action_issue(request, outcome.error)  # the form comes back as it was, with the reason
        elif what == "init" and outcome.view.state == "no-ca":
            self.action_init_ca(request, outcome.error)  # so does this one, while the folder can take a CA
        else:
            self.notify(outcome.error, title=f"PKI: {what} failed", severity="error", timeout=10)
