"""The Textual application and ``main``.

``main(config=None, *, attach=None, runtime=None)`` chooses the runtime:
an explicit ``runtime`` (tests, demos), ``attach`` (a daemon's control
socket), ``config`` (engine embedded on that policy) or, with neither, the
lab. A runtime that cannot start prints one line and returns 2.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import tomllib
from collections.abc import Callable, Iterable
from datetime import datetime

from textual import events, on
from textual.app import App, ScreenStackError, SystemCommand, _character_to_key
from textual.binding import Binding
from textual.screen import Screen

from console.bridge import RuntimeBridge
from console.screens.clients import ClientsScreen
from console.screens.dashboard import DashboardScreen
from console.screens.logs import LogsScreen
from console.screens.negotiations import NegotiationsScreen
from console.screens.packets import PacketsScreen
from console.screens.pki import PkiScreen
from console.screens.policies import PoliciesScreen
from console.commands import ConsoleCommands
from console.export import EXPORT_NAMES, export_dir
from console.messages import EventsArrived, RuntimeTrouble, StatusUpdated
from console.runtime.base import Runtime, RuntimeProblem, RuntimeUnavailable
from console.settings import DEFAULT_THEME, Settings
from console.store import Store
from console.theming import load_themes
from console.widgets.pki_expiry import CertExpiryWatch
from engine.pki.ca import utc_now
from engine.printable import escape

FREEZE_FROM_SAS = 1000
"""Status polls of at least this many IKE SAs freeze what they brought (`_freeze_status_objects`)."""
FREEZE_FROM_EVENTS = 1000
"""...and so do polls after at least this many events since the previous one (a busy engine)."""
SWEEP_PERIOD = 300.0
"""Seconds between the console's full collections once polls freeze (`_sweep`)."""

MODE_KEYS = (
    ("1", "dashboard", "Dash"),
    ("2", "negotiations", "Nego"),
    ("3", "policies", "Policy"),
    ("4", "logs", "Logs"),
    ("5", "packets", "Pkts"),
    ("6", "pki", "PKI"),
    ("7", "clients", "Clients"),
)
MODE_NAMES = {"dashboard": "Dashboard", "negotiations": "Negotiations", "policies": "Policies", "logs": "Logs",
              "packets": "Packets", "pki": "PKI", "clients": "Clients"}
"""The screens as the help's "1 Dashboard · 2 Negotiations ..." line names them (help and palette said "Go to pki")."""




OPTION_DIGITS = {"\x1b1": "¡", "\x1b2": "™", "\x1b3": "£", "\x1b4": "¢", "\x1b5": "∞", "\x1b6": "§",
                 "\x1b7": "¶", "\x1b8": "•", "\x1b9": "ª", "\x1b0": "º", "\x1b-": "–", "\x1b=": "≠"}
"""ESC + a key Textual decodes as a character (WezTerm's macOS Option keys, _ansi_sequences.py)."""


def read_escape_digits_as_alt() -> None:
    """Make Textual read ESC 2 as alt+2 (split_escape: Escape, 2), not as "™". That "™" is the very
    key a "™" typed gives, so splitting it turned every "£" or "§" typed (shift+3 on UK and German
    keyboards: a PSK, a search) into Escape and a digit: the dialog closed, screen 3 opened."""
    try:
        from textual._ansi_sequences import ANSI_SEQUENCES_KEYS
    except ImportError:  # a Textual that moved it: ESC 2 stays "™"
        return
    for seq, char in OPTION_DIGITS.items():
        if ANSI_SEQUENCES_KEYS.get(seq) == char:
            del ANSI_SEQUENCES_KEYS[seq]  # type: ignore[attr-defined]  # a dict behind a Mapping hint


SEQUENCE_INTRODUCERS = frozenset("[]\\_^")
"""After ESC these open (CSI, OSC, APC, PM) or end (ST) an escape sequence: when Textual cannot place
one (a terminal's reply, a cut mouse report) it reissues it as keys, and its ESC stays dropped rather
than press Escape (test_escape_sequence_introducers). Nothing binds them, so Escape typed fast before
one is the only loss."""


def keep_escape_before_symbols() -> None:
    """Make Textual read ESC / (any symbol or space) as alt+slash, which split_escape turns into
    Escape, /. Its parser keeps alt+ on a letter or digit after an ESC but gives a symbol's key
    alone, the Escape dropped: Escape, / typed quickly in the log search typed "/" into it."""
    try:
        from textual._xterm_parser import XTermParser
    except ImportError:  # a Textual that moved it: ESC / stays "/"
        return
    read = XTermParser._sequence_to_key_events
    if getattr(read, "keeps_escape", False):
        return

    def sequence_to_key_events(self, sequence: str, alt: bool = False):
        for event in read(self, sequence, alt):
            # alt is set only for the character right after an ESC the parser could not place
            if (alt and len(sequence) == 1 and event.character == sequence and sequence.isprintable()
                    and sequence not in SEQUENCE_INTRODUCERS and not event.key.startswith("alt+")):
                event = events.Key(f"alt+{event.key}", sequence)
            yield event

    sequence_to_key_events.keeps_escape = True  # type: ignore[attr-defined]
    XTermParser._sequence_to_key_events = sequence_to_key_events  # type: ignore[method-assign]


def split_escape(event: events.Key) -> tuple[events.Key, events.Key] | None:
    """Escape and the key typed after it, when they arrived in one read and Textual decoded them as
    one key: tmux (escape-time 500 ms) and a slow ssh link deliver them so. ESC d became alt+d
    (which a text field took as "d"), ESC 2 alt+2 (read_escape_digits_as_alt), ESC / alt+slash
    (keep_escape_before_symbols). None for any other key."""
    key, char = event.key, event.character
    if not (key.startswith("alt+") and char is not None and len(char) == 1 and char.isprintable()):
        return None
    name = char if char.isalnum() else _character_to_key(char)
    return events.Key("escape", "\x1b"), events.Key(name, char)


class ConsoleApp(CertExpiryWatch, RuntimeBridge, App):
    """ipsec-console. Screens read ``self.store``; the bridge fills it."""

    CSS_PATH = "app.tcss"
    MODES = {
        "dashboard": DashboardScreen,
        "negotiations": NegotiationsScreen,
        "policies": PoliciesScreen,
        "logs": LogsScreen,
        "packets": PacketsScreen,
        "pki": PkiScreen,
        "clients": ClientsScreen,
    }
    DEFAULT_MODE = "dashboard"
    TITLE = "ipsec-console"
    BINDINGS = [
        # Shown as the navigation strip of the top bar rather than in the footer (80 columns).
        *(Binding(key, f"switch_mode('{mode}')", f"Go to {MODE_NAMES[mode]}", show=False, id=f"app.{mode}")
          for key, mode, _ in MODE_KEYS),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("f1", "help", "Help", show=False, id="app.help_f1"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def notify(self, message: str, *, title: str = "", severity="information", timeout: float | None = None,
               markup: bool = True) -> None:
        """Every toast drawn as data: no console message is written as markup, and many quote a peer's
        text (a copied identity, a log line, an error): markup in it was interpreted ("[@click=...]")
        or crashed the app (MarkupError), and its controls reached the terminal. Lines stay lines."""
        inert = "\n".join(map(escape, str(message).split("\n")))
        super().notify(inert, title=escape(str(title)), severity=severity, timeout=timeout, markup=False)

    def __init__(self, runtime: Runtime, *, settings_path=None, theme_dirs=None,
                 poll_interval: float | None = None, clock: Callable[[], datetime] | None = None) -> None:
        read_escape_digits_as_alt()
        keep_escape_before_symbols()
        self.runtime = runtime
        self.clock = clock or utc_now
        """Wall clock for certificate dates (the PKI screen, expiry warnings); tests freeze it."""
        self.store = Store()
        self._settings_path = settings_path
        self._theme_dirs = theme_dirs
        self._theme_colors: dict[str, str] | None = None
        self.settings, settings_problem = Settings.load(settings_path)
        if poll_interval is not None:
            self.poll_interval = poll_interval
        self._startup_problems: list[str] = [settings_problem] if settings_problem else []
        self.policy_editor = None
        """The Policies screen once it was opened (the quit guard asks it what is unsaved)."""
        self._sweeper = None
        """The interval of `_sweep`, once a poll froze what it brought."""
        self._events_since_poll = 0
        super().__init__()
        self._load_themes()
        self._load_keymap()

    # ------------------------------------------------------------- setup
    def _load_themes(self) -> None:
        themes, problems = load_themes(self._theme_dirs)
        for t in themes:
            self.register_theme(t)
        self._startup_problems.extend(problems)
        wanted = self.settings.theme
        if wanted not in self.available_themes:
            if wanted != DEFAULT_THEME:
                self._startup_problems.append(f"theme {wanted!r} not found, using {DEFAULT_THEME}")
            wanted = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
        self.theme = wanted

    def _load_keymap(self) -> None:
        keymap = self.settings.keymap
        good = {k: v for k, v in keymap.items() if isinstance(k, str) and isinstance(v, str) and v.strip()}
        if len(good) != len(keymap):
            self._startup_problems.append("settings.toml [keymap]: values must be key strings, e.g. "
                                          '"dashboard.initiate" = "I"; the others are ignored')
        if good:
            self.set_keymap(good)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded and event.key not in self._bound_keys():
            keys = split_escape(event)
            if keys is not None:
                for key in keys:
                    await super().on_event(key)
                return
        await super().on_event(event)

    def _bound_keys(self) -> set[str]:
        """Keys a binding of the current screen takes (a keymap may bind alt+l: then it is alt+l)."""
        try:
            return set(self.screen.active_bindings)
        except ScreenStackError:
            return set()

    def action_help(self) -> None:
        from console.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    async def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        for problem in self._startup_problems:
            self.notify(problem, title="Settings / themes", severity="warning", timeout=10)
        try:
            await self.start_bridge()
        except RuntimeUnavailable as exc:
            self.exit(return_code=2, message=f"ipsec-console: {exc}")
        except RuntimeProblem as exc:
            self.notify(str(exc), title="Runtime", severity="error", timeout=30)
            self.store.add_alert("runtime", f"runtime: {exc}")
        else:
            self.start_expiry_watch()
            self._freeze_startup_objects()
            if self.runtime.kind == "draft":  # a new file or a broken one: nothing runs, author or fix it
                problem = getattr(self.runtime, "problem", "")
                if problem:
                    self.notify(f"{problem}\nNothing runs: fix it here, save (ctrl+s), then start it again.",
                                title="The policy does not validate", severity="error", timeout=30)
                self.switch_mode("policies")

    @staticmethod
    def _freeze_startup_objects() -> None:
        """Move what start-up made (modules, CSS, themes, the first screen: ~250,000
        objects, all kept for the whole run) out of the collector's way, once. Under a
        busy engine a full collection walked them all, 100-250 ms, a lost frame each time."""
        gc.collect()
        gc.freeze()

    async def on_unmount(self) -> None:
        await self.stop_bridge()

    # ------------------------------------------------------------- themes
    def theme_colors(self) -> dict[str, str]:
        """The current theme's CSS variables (cached until the theme changes)."""
        if self._theme_colors is None:
            self._theme_colors = self.get_css_variables()
        return self._theme_colors

    def _on_theme_changed(self, theme) -> None:
        self._theme_colors = None
        if self.settings.theme != theme.name:
            self.settings.theme = theme.name
            try:
                self.settings.save(self._settings_path)
            except OSError as exc:
                self.notify(f"could not remember the theme: {exc}", severity="warning")
        from console.widgets.keyed_table import KeyedTable

        for screen in self.screen_stack:
            for table in screen.query(KeyedTable):
                table.restyle()

    # ------------------------------------------------------------- bridge messages
    def _sync_screen(self, parts: frozenset[str]) -> None:
        if self._exit or self._closing:
            return  # shutting down: screens are being taken apart
        try:
            screen = self.screen
        except ScreenStackError:
            return  # between screens (or at the very end): the next screen catches up on mount
        sync = getattr(screen, "sync", None)
        # A screen still composing catches up in its own on_mount; one being removed is skipped.
        if sync is not None and getattr(screen, "ready", False) and not screen._closing:
            sync(parts)

    def on_status_updated(self, message: StatusUpdated) -> None:
        try:
            self.store.apply_status(message.snapshot)
            self._sync_screen(frozenset({"status"}))
        finally:
            self.status_taken()
        busy, self._events_since_poll = self._events_since_poll >= FREEZE_FROM_EVENTS, 0
        if busy or len(message.snapshot.ike_sas) >= FREEZE_FROM_SAS:
            self._freeze_status_objects()

    def _freeze_status_objects(self) -> None:
        """What a poll of thousands of SAs brought (~100,000 objects with 10,000 SAs), or what the
        events of a busy engine filled the stores with, moves out of the collector's way once
        applied, as the start-up objects did: the collector otherwise walked all of it every few
        seconds (1.3 million objects with 10,000 SAs, 500-800 ms; 190,000 under 1,000 handshakes/s,
        100-240 ms: lost frames, and a CPU taken from the engine on a small machine). Most of them
        are freed by reference counting when replaced; the few reference cycles wait for `_sweep`."""
        gc.freeze()
        if self._sweeper is None:
            self._sweeper = self.set_interval(SWEEP_PERIOD, self._sweep, name="collector sweep")

    @staticmethod
    def _sweep() -> None:
        """A full collection of everything frozen since the last one (reference cycles the console
        let go of meanwhile), then freeze again: one long pass every SWEEP_PERIOD, not every poll."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def on_events_arrived(self, message: EventsArrived) -> None:
        t0 = time.perf_counter()
        self._events_since_poll += len(message.events)
        parts = self.store.apply_events(message.events)
        if parts:
            self._sync_screen(frozenset(parts))
        if "policy" in parts:
            self.check_cert_expiry()
        self.events_handled(len(message.events), time.perf_counter() - t0)

    def on_runtime_trouble(self, message: RuntimeTrouble) -> None:
        self.store.add_alert("runtime", f"{message.where}: {message.text}")
        self.notify(message.text, title=f"Runtime ({message.where})", severity="error",
                    timeout=30 if message.fatal else 8)
        if message.fatal:
            self.runtime_alive = False
        self._sync_screen(frozenset({"alerts"}))

    # ------------------------------------------------------------- navigation and actions
    def open_detail(self, connection: str, ike_id: int | None = None, child_id: int | None = None) -> None:
        from console.screens.sa_detail import SaDetailScreen

        self.push_screen(SaDetailScreen(connection, ike_id, child_id))

    def open_negotiations(self, ike_id: int | None = None, connection: str | None = None) -> None:
        def focus() -> None:
            screen = self.screen
            if hasattr(screen, "focus_ike"):
                screen.focus_ike(ike_id, connection)

        self.switch_mode("negotiations")
        self.call_after_refresh(focus)

    def open_pki(self, action: str | None = None) -> None:
        """The PKI screen, then one of its actions (issue, revoke, crl, init_ca, folder)."""
        def run() -> None:
            request = getattr(self.screen, "request", None)
            if action and request is not None:
                request(action)

        self.switch_mode("pki")
        self.call_after_refresh(run)

    def _confirm(self, title: str, body: str, description: str, call, *, danger: bool = False,
                 yes: str = "Yes") -> None:
        from console.screens.confirm import ConfirmScreen

        def answered(ok: bool | None) -> None:
            if ok:
                self.run_command(description, call)

        self.push_screen(ConfirmScreen(title, body, yes=yes, danger=danger), answered)

    def confirm_initiate(self, name: str, child: str | None = None) -> None:
        what = f"{name}" + (f" (CHILD {child})" if child else "")
        self._confirm(f"Initiate {what}?", f"Start IKE negotiation for {what} now.", "initiate",
                      lambda: self.runtime.initiate(name, child), yes="Initiate")

    def confirm_rekey(self, name: str, *, ike: bool, unique_id: int | None = None) -> None:
        missing = self._nothing_to_rekey(name, ike=ike) if unique_id is None else ""
        if missing:
            # Not a question whose only answer is a refusal: say so now, and what to do instead.
            self.notify(missing, severity="warning")
            return
        if ike:
            what = f"IKE SA #{unique_id} of {name}" if unique_id is not None else f"the IKE SA of {name}"
            body = "A new IKE SA replaces it; its CHILD SAs move over and traffic keeps flowing."
        else:
            what = f"CHILD SA {{{unique_id}}} of {name}" if unique_id is not None else f"every CHILD SA of {name}"
            body = "New SPIs and keys are negotiated; the old SA is deleted once the new one is in."
        self._confirm(f"Rekey {what}?", body, "rekey",
                      lambda: self.runtime.rekey(name, ike=ike, unique_id=unique_id), yes="Rekey")

    def _is_down(self, name: str) -> bool:
        """``name`` is down by the last status: no IKE SA at all (not even one being negotiated)."""
        snap = self.store.snapshot
        if snap is None:
            return False
        conn = next((c for c in snap.connections if c.name == name), None)
        return conn is not None and conn.state == "down" and not any(i.name == name for i in snap.ike_sas)

    def _is_failing(self, name: str) -> bool:
        """``name`` failed and waits for its next attempt, with no IKE SA now (by the last status)."""
        snap = self.store.snapshot
        if snap is None:
            return False
        conn = next((c for c in snap.connections if c.name == name), None)
        return conn is not None and conn.state == "failing" and not any(i.name == name for i in snap.ike_sas)

    def _nothing_to_rekey(self, name: str, *, ike: bool) -> str:
        """Why rekeying ``name`` as a whole would be refused, by the last status; "" when it may work.
        The engine rekeys established IKE SAs and installed CHILD SAs only."""
        snap = self.store.snapshot
        if snap is None or not any(c.name == name for c in snap.connections):
            return ""
        up = [i for i in snap.ike_sas if i.name == name and i.state == "ESTABLISHED"]
        if not up:
            return f"{name} has no established IKE SA to rekey: initiate it first (i)"
        if not ike and not any(ch.state == "INSTALLED" for i in up for ch in i.children):
            return f"{name} has no installed CHILD SA to rekey"
        return ""

    def confirm_terminate(self, name: str, ike_id: int | None = None) -> None:
        if ike_id is None and self._is_failing(name):
            # No IKE SA, but its next keyingtries attempt is scheduled: terminate cancels that.
            self._confirm(f"Stop {name} trying again?",
                          "It failed and will try again (keyingtries). Terminate stops that; initiate "
                          "starts it again.", "terminate",
                          lambda: self.runtime.terminate(name), danger=True, yes="Stop")
            return
        if ike_id is None and self._is_down(name):
            # Not a question whose only answer is a refusal ("no IKE SA to terminate").
            self.notify(f"{name} is down: it has no IKE SA to terminate", severity="warning")
            return
        what = f"IKE SA #{ike_id} of {name}" if ike_id is not None else f"every IKE SA of {name}"
        self._confirm(f"Terminate {what}?",
                      "Its CHILD SAs are deleted and traffic they protect stops until the connection is "
                      "initiated again.", "terminate",
                      lambda: self.runtime.terminate(name, unique_id=ike_id), danger=True, yes="Terminate")

    # ------------------------------------------------------------- quitting
    def pending_work(self) -> list[str]:
        """What quitting now would lose: unsaved edits, an applied policy not saved, edits not applied."""
        editor = self.policy_editor
        if editor is None or not editor.is_mounted:
            return []
        return editor.standing().problems()

    async def action_quit(self) -> None:
        from console.screens.confirm import ConfirmScreen

        problems = self.pending_work()
        if not problems:
            self.exit()
            return
        title = self.policy_editor.standing().quit_title()
        if isinstance(self.screen, ConfirmScreen) and self.screen.title_text.startswith("Quit"):
            return  # already asking

        def answered(ok: bool | None) -> None:
            if ok:
                self.exit()

        self.push_screen(ConfirmScreen(title, "\n".join(f"• {p}" for p in problems),
                                       yes="Quit anyway", danger=True), answered)

    # ------------------------------------------------------------- exports
    def deliver_screenshot(self, filename: str | None = None, path: str | None = None,
                           time_format: str | None = None) -> str | None:
        # Textual's default folder is ~/Downloads, which a server usually lacks.
        return super().deliver_screenshot(filename, path or str(export_dir(self.settings.export_dir)), time_format)

    @on(events.DeliveryComplete)
    def _export_done(self, event: events.DeliveryComplete) -> None:
        if event.name in EXPORT_NAMES and event.name != "screenshot":  # Textual reports screenshots itself
            where = f" to {event.path}" if event.path is not None else ""
            self.notify(f"saved{where}", title=EXPORT_NAMES[event.name])

    @on(events.DeliveryFailed)
    def _export_failed(self, event: events.DeliveryFailed) -> None:
        if event.name in EXPORT_NAMES and event.name != "screenshot":
            self.notify(str(event.exception), title=f"{EXPORT_NAMES[event.name]} not saved", severity="error")

    # ------------------------------------------------------------- command palette
    COMMANDS = App.COMMANDS | {ConsoleCommands}

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)


def _is_lab_policy(config: str) -> bool:
    """A lab policy (datapath "lab" with a [lab] section) runs the whole lab, its peers too."""
    try:
        with open(config, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return False  # the runtime reports what is wrong with it
    engine = doc.get("engine")
    return isinstance(engine, dict) and engine.get("datapath") == "lab" and isinstance(doc.get("lab"), dict)


def _invalid(config: str) -> str:
    """Why the policy file ``config`` does not validate ("" when it does, or cannot be read at all:
    the runtime says why then)."""
    from engine.policy.findings import PolicyError
    from engine.policy.parse import load_policy

    try:
        load_policy(config)
    except PolicyError as exc:
        errors = [f for f in exc.findings if f.severity == "error"] or list(exc.findings)
        if errors and all(f.message.startswith("cannot read the secrets file") for f in errors):
            return ""  # a matter of permissions (run as root, or attach), not an edit: the runtime says so
        return errors[0].format() if errors else str(exc)
    except OSError:
        return ""
    return ""


def _default_runtime(config: str | None, attach: str | None) -> Runtime:
    """The real runtimes (embedded, lab, attached) once they exist in this build."""
    if attach is not None:
        try:
            from console.runtime.attached import AttachedRuntime
        except ImportError:
            raise RuntimeUnavailable("attaching to a daemon is not available in this build yet") from None
        return AttachedRuntime(attach)
    try:
        from console.runtime.embedded import EmbeddedRuntime
    except ImportError:
        what = "the lab" if config is None else "the embedded engine"
        raise RuntimeUnavailable(f"{what} is not available in this build yet (the engine runtime is missing); "
                                 "try: python3 -m console.demo") from None
    if config is None:
        return EmbeddedRuntime.lab()
    from console.runtime.draft import DraftRuntime

    if not os.path.exists(config):
        return DraftRuntime(config)
    problem = _invalid(config)
    if problem:
        # Refusing it would leave the console useless for the one thing needed: fixing the file.
        return DraftRuntime(config, problem=problem)
    if _is_lab_policy(config):
        return EmbeddedRuntime.lab(config)
    return EmbeddedRuntime(config)


def _check_daemon(path: str) -> None:
    from engine.runtime.client import ControlError, check_reachable

    try:
        check_reachable(path)
    except ControlError as exc:
        raise RuntimeUnavailable(str(exc)) from None


def main(config: str | None = None, *, attach: str | None = None, runtime: Runtime | None = None) -> int:
    """Run the console; returns the process exit code (never raises for a missing runtime)."""
    try:
        if runtime is None and attach is not None:
            _check_daemon(attach)  # before the screen is taken over: a plain error, a clean terminal
        rt = runtime if runtime is not None else _default_runtime(config, attach)
    except RuntimeProblem as exc:
        print(f"ipsec-console: {exc}", file=sys.stderr)
        return 2
    app = ConsoleApp(rt)
    app.run()
    return app.return_code or 0
