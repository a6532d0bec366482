"""Policies: the policy as a tree and forms (keyboard first), raw TOML, the
diff against the running policy, Apply (only changed connections are
touched), Save (atomic, with a backup), Save as, a new file from a template,
PSK entry into the secrets file, and the question "what happens to this
packet?" answered by the SPD.

A policy that does not validate is never applied nor saved: both actions
re-validate the exact text first, in the same worker that would act. Form
edits go through tomlkit (``console.policy_form``): comments and layout of a
hand-written file stay as they were, so no edit needs a "rewrite?" question.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (Button, Input, Label, Select, Static, Switch, TabbedContent, TabPane, TextArea)

from engine.policy.diff import diff_policies
from engine.policy.findings import PolicyError
from engine.policy.model import Policy

from console import policy_form as pf
from console.policy_state import Standing, Validation, pools_supported, read_file, validate_text
from console.screens.base import ConsoleScreen
from console.screens.confirm import ConfirmScreen
from console.screens.policy_edits import FileEdits, TreeEdits, editable
from console.screens.policy_panels import DiffPanel, FormPanel, SpdQuestion
from console.screens.policy_panels import finding_style as _finding_style
from console.widgets.fields import Editor, Field, focus_now
from console.widgets.policy_tree import PolicyTree

TABS = ("pol-tree-tab", "pol-toml-tab", "pol-diff-tab", "pol-spd-tab")


def _toml_language() -> str | None:
    try:
        import tree_sitter_toml  # noqa: F401
    except ImportError:
        return None
    return "toml"


def advice_lines(infos) -> list[str]:
    """Advice (severity info) in one line per rule, naming where: the findings panel stays small
    for the errors and warnings, and each field's form shows the advice in full."""
    where: dict[str, list[str]] = {}
    for f in infos:
        kp = f.key_path
        name = kp.split(".")[1] if kp.startswith("connections.") and kp.count(".") >= 1 else kp or f.file
        if name not in where.setdefault(f.rule or "advice", []):
            where[f.rule or "advice"].append(name)
    return [f"ℹ [{rule}] {', '.join(names)}: advice, read in full at the field (or ipsec-console check)"
            for rule, names in where.items()]


class PoliciesScreen(FormPanel, DiffPanel, SpdQuestion, TreeEdits, FileEdits, ConsoleScreen):
    """See the module docstring. The tree's own keys (a, c, x, k, Enter) act on its selection."""

    TITLE_TEXT = "Policies"
    MODE = "policies"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="policy.save"),
        Binding("ctrl+g", "apply", "Apply", id="policy.apply"),
        Binding("ctrl+t", "next_tab", "Tab", id="policy.next_tab"),
        Binding("ctrl+o", "save_as", "Save as", show=False, id="policy.save_as"),
        Binding("ctrl+n", "new_file", "New file", show=False, id="policy.new_file"),
        Binding("ctrl+r", "revert", "Revert", show=False, id="policy.revert"),
        Binding("escape", "to_tree", "Tree", show=False, id="policy.to_tree"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.running: Policy | None = None
        self.running_text = ""
        self.file_path: str | None = None
        """Where Save writes (the running policy's file, or what Save as / New file chose)."""
        self.file_text: str | None = None
        """The file's content as last read or written; None while it does not exist."""
        self.running_saved = True
        """What the engine runs has been in a file (read at load, or saved since it was applied): a
        Save that is not applied yet replaces it on purpose, it is not a policy lost at the next start."""
        self.validation: Validation | None = None
        self.pools = pools_supported()
        self._form_node: tuple | None = None
        self._form_asked = self._form_built = 0  # form rebuilds asked for and done
        self._form_building = False
        self._validate_timer = None
        self._pending_cursor: tuple | None = None
        self._loaded_once = False
        self._seen_applied = None
        self._applying: str | None = None
        """The text of this console's apply while the engine has it (its PolicyApplied is ours)."""
        self._secrets_pending: tuple[str, ...] = ()
        self._form_unparsed = False
        """The form shows "the TOML does not parse" (rebuilt with fields once it parses again)."""
        self._form_text: str | None = None
        """The text the form's fields show (read when it was built, or written by its own edit)."""

    # ------------------------------------------------------------- layout
    def body(self) -> ComposeResult:
        with TabbedContent(id="pol-tabs"):
            with TabPane("Tree & form", id="pol-tree-tab"):
                with Horizontal():
                    yield PolicyTree("policy", id="pol-tree")
                    yield VerticalScroll(id="pol-form")
            with TabPane("TOML", id="pol-toml-tab"):
                yield Editor.code_editor("", language=_toml_language(), id="pol-editor", soft_wrap=False,
                                           theme="css")
            with TabPane("Diff", id="pol-diff-tab"):
                with VerticalScroll(id="pol-diff-box"):
                    yield Static("", id="pol-diff")
            with TabPane("Ask the SPD", id="pol-spd-tab"):
                with Vertical(id="spd-form"):
                    yield Label("What happens to a packet from A to B?")
                    with Horizontal(classes="spd-row"):
                        yield Field(placeholder="source, e.g. 198.51.100.5", id="spd-src", compact=True)
                        yield Field(placeholder="destination", id="spd-dst", compact=True)
                    with Horizontal(classes="spd-row"):
                        yield Field("tcp", placeholder="proto", id="spd-proto", compact=True)
                        yield Field(placeholder="src port", id="spd-sport", compact=True)
                        yield Field(placeholder="dst port", id="spd-dport", compact=True)
                        yield Select([("outbound", "out"), ("inbound", "in")], value="out", allow_blank=False,
                                     id="spd-dir", compact=True)
                    yield Button("Ask (Enter)", id="spd-ask", compact=True)
                    yield Static("", id="spd-answer")
        yield Static("", id="pol-findings")

    def on_mount(self) -> None:
        super().on_mount()
        self.app.policy_editor = self  # the quit guard asks us what is unsaved
        self.query_one(PolicyTree).show_root = True
        self._load()

    def on_resize(self, event) -> None:
        self.call_after_refresh(self._fit_full_values)  # fields wider or narrower: which values they cut

    def _load(self) -> None:
        self.app.run_command("load policy", self.app.runtime.policy, on_done=self._loaded)

    def _loaded(self, result: tuple[Policy, str]) -> None:
        policy, text = result
        self._seen_applied = self.app.store.last_applied
        self.running = policy
        self.running_text = text
        self.file_path = os.path.abspath(policy.path) if policy.path else None
        on_disk = read_file(self.file_path)
        # A daemon's file may be unreadable here (root-only): then what it runs is what it has.
        self.file_text = on_disk if on_disk is not None or not text else text
        self.running_saved = self.file_text is None or text == self.file_text
        if self.file_text is None and not text:  # a file that does not exist yet
            self._set_editor(pf.EMPTY_POLICY)
        else:
            self._set_editor(text if text or on_disk is None else on_disk)
        first = ("connection", policy.connections[0].name) if policy.connections else ("engine",)
        # Loaded again (an apply, ours or from elsewhere): the node being edited stays selected when
        # it is still there; only the first load starts at the first connection.
        tree = self.query_one(PolicyTree)
        keep = tree.cursor_node.data if self._loaded_once and tree.cursor_node is not None else None
        self._pending_cursor = keep if keep is not None and keep != ("file",) else first
        self._validate_now()
        if not self._loaded_once:
            self._loaded_once = True
            self.query_one(PolicyTree).focus()

    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        applied = self.app.store.last_applied
        if "policy" in parts and applied is not self._seen_applied:
            self._seen_applied = applied
            if self.running is not None:
                # Ours or another's (another console, ipsec-console reload): what the engine now runs
                # tells, not when the event came.
                self.app.run_command("load policy", self.app.runtime.policy, on_done=self._running_now)

    def _running_now(self, result: tuple[Policy, str]) -> None:
        policy, text = result
        if self.running is None or text in (self.running_text, self._applying):
            return  # what this console applied (the event of its own apply, before or after its answer)
        if self._text() == self.running_text:
            self._loaded(result)  # applied from elsewhere, no edits here: follow it
            return
        # Applied from elsewhere over edits not applied here: they stay, but Diff and Apply compare
        # them with what now runs, and the admin hears of it (Apply would replace that policy).
        self.running = policy
        self.running_text = text
        self.running_saved = text == self.file_text
        self.notify("The policy was applied from elsewhere (another console, ipsec-console reload). Your "
                    "edits are kept; the Diff tab compares them with what now runs, Apply replaces it.",
                    title="Policy changed", severity="warning", timeout=15)
        self._validate_now()

    # ------------------------------------------------------------- text and where it stands
    def _text(self) -> str:
        return self.query_one("#pol-editor", TextArea).text

    def _own_secrets(self) -> bool:
        """The secrets file is ours to read (not a daemon's, root-only): PSKs are checked here too."""
        return self.app.runtime.kind != "attached"

    def _can_apply(self) -> bool:
        return self.app.runtime.capabilities.apply_policy

    def _dirty_engine(self) -> bool:
        return self.running is not None and self._can_apply() and self._text() != self.running_text

    def standing(self) -> Standing:
        text = self._text()
        can_apply = self.running is not None and self._can_apply()
        return Standing(
            path=self.file_path,
            unsaved=self.running is not None and text != (self.file_text or "") and bool(text.strip()),
            unapplied=can_apply and text != self.running_text,
            applied_unsaved=can_apply and self.file_text is not None and self.running_text != self.file_text
            and not self.running_saved,
            secrets_unapplied=self._secrets_pending if can_apply and text == self.running_text else (),
        )

    def _secrets_changed(self, v: Validation) -> tuple[str, ...]:
        """Connections that the same text now gives another PSK than the engine runs with (a PSK
        set with k, or the secrets file edited): only an Apply hands it to the engine."""
        if not (v.ok and v.policy is not None and self.running is not None and v.text == self.running_text
                and self._own_secrets() and self._can_apply()):
            return ()
        return diff_policies(self.running, v.policy).changed

    def _set_editor(self, text: str) -> None:
        self.query_one("#pol-editor", TextArea).load_text(text)

    @on(TextArea.Changed, "#pol-editor")
    def _editor_changed(self, event: TextArea.Changed | None = None) -> None:
        if self._validate_timer is not None:
            self._validate_timer.stop()
        self._validate_timer = self.set_timer(0.3, self._settle)

    def _settle(self) -> None:
        self._refresh_tree()  # sections show as soon as they parse, before they validate
        self._validate_now()

    def _validate_now(self) -> None:
        self._validate(self._text(), self.file_path)

    @work(thread=True, group="validate", exclusive=True, exit_on_error=False)
    def _validate(self, text: str, path: str | None) -> None:
        result = validate_text(text, path, load_secrets=self._own_secrets())
        self.app.call_from_thread(self._show_validation, result)

    def _show_validation(self, v: Validation) -> None:
        if v.text != self._text():
            return  # stale: a newer validation is on its way
        self.validation = v
        self._secrets_pending = self._secrets_changed(v)
        colors = self.app.theme_colors()
        out = Text()
        if v.ok:
            out.append("✓ valid", style=f"bold {colors.get('success', '')}")
            out.append(f" — {len(v.warnings)} lint warning(s)" if v.warnings else " — no lint warnings")
            if v.infos:
                out.append(f", {len(v.infos)} note(s)")
        else:
            out.append(f"✗ {len(v.errors)} error(s): not applicable, not savable",
                       style=f"bold {colors.get('error', '')}")
        state = self.standing().problems()
        # The file's name leads a problem about the text (the tree's root names the file): it goes;
        # the rest stays whole ("the engine runs a policy not saved in X: it is lost ..." had lost
        # its first half to a split at the first ": ").
        lead = f"{os.path.basename(self.file_path) if self.file_path else 'the policy'}: "
        out.append(("  (" + "; ".join(p.removeprefix(lead) for p in state) + ")") if state else
                   "  (saved, same as running)", style="dim")
        for f in v.errors + v.warnings:
            out.append("\n")
            out.append(f.format(), style=_finding_style(colors, f))
        for line in advice_lines(v.infos):
            out.append("\n")
            out.append(line, style=colors.get("primary", ""))
        self.query_one("#pol-findings", Static).update(out)
        self._refresh_tree()
        self._refresh_form_findings()
        self._refresh_diff()

    # ------------------------------------------------------------- tree
    def _refresh_tree(self) -> None:
        tree = self.query_one(PolicyTree)
        data = pf.load_data(self._text())
        label = Path(self.file_path).name if self.file_path else "policy"
        if data is None:
            root = tree.root.label
            if "TOML error" not in str(root):
                tree.root.set_label(Text(label + "  TOML error: fix it in the TOML tab", style="bold red"))
            if not self._form_unparsed and self._form_node is not None:
                # Its fields would take typing that has no document to go to: the form says why instead.
                self._form_unparsed = True
                self._build_form(self._form_node)
            return
        # It parses again, or the text changed under the form (a policy applied elsewhere and loaded
        # again with the same node kept selected, an edit in the TOML tab): the same node's fields
        # come back with what the text now says, not the values they were built with.
        refill = self._form_unparsed or (self._form_text is not None and self._text() != self._form_text)
        self._form_unparsed = False
        engine = data.get("engine") if isinstance(data.get("engine"), dict) else {}
        cursor = self._pending_cursor
        self._pending_cursor = None
        tree.set_data(label, pf.tree_of(data), str(engine.get("datapath", "kernel")), pools=self.pools,
                      cursor=cursor or (tree.cursor_node.data if tree.cursor_node is not None else None))
        node = tree.cursor_node.data if tree.cursor_node is not None else None
        if editable(node) and (node != self._form_node or refill):
            self._build_form(node)
        elif editable(self._form_node) and self._form_node not in tree.nodes():
            self._build_form(("engine",))
        elif refill and editable(self._form_node):
            self._build_form(self._form_node)

    def on_tree_node_highlighted(self, event: PolicyTree.NodeHighlighted) -> None:
        if event.node is not event.control.cursor_node:
            return  # a stale highlight from rebuilding the tree
        data = event.node.data
        if editable(data) and data != self._form_node:
            self._build_form(data)

    # ------------------------------------------------------------- messages of the form and the SPD tab
    # Here, not in the panels' mixins: Textual reads @on handlers only from its own classes.
    @on(Input.Changed, "#pol-form Input")
    def _input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._form_edit(event.input, event.value)

    @on(events.DescendantFocus, "#pol-form Input, #pol-form Switch")
    def _field_focused(self, event: events.DescendantFocus) -> None:
        event.widget.focused_once = True  # its later Changed messages are a person's edits (_form_edit)

    @on(Switch.Changed, "#pol-form Switch")
    def _switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self._form_edit(event.switch, event.value)

    @on(Button.Pressed, "#spd-ask")
    @on(Input.Submitted, "#spd-form Input")
    def ask_spd(self, event=None) -> None:
        self.answer_spd()

    def action_to_tree(self) -> None:
        focus_now(self.query_one(PolicyTree))

    # ------------------------------------------------------------- apply
    def action_apply(self) -> None:
        if self.running is None:
            return
        if not self._can_apply():
            self.notify("No engine runs this policy here: save it, then start it "
                        f"(ipsec-console {self.file_path or 'FILE'}, or ipsec-console daemon)", severity="warning")
            return
        elsewhere = self._runs_another_file()
        if elsewhere:
            self.notify(elsewhere, title="Apply refused", severity="warning", timeout=15)
            return
        self._apply_checked(self._text(), self.file_path)

    def _runs_another_file(self) -> str:
        """Why this text may not be applied: the engine (embedded, or a daemon) reads its own file
        again at its next start or reload, so a Save-as copy or a new file applied to it would run
        only until then. "" when it may (the same file, or the lab, which reads no file again)."""
        if self.app.runtime.kind not in ("embedded", "attached") or self.running is None:
            return ""
        running = os.path.abspath(self.running.path) if self.running.path else None
        if running is None or self.file_path is None or self.file_path == running:
            return ""
        run = (f"ipsec-console daemon {self.file_path}" if self.app.runtime.kind == "attached"
               else f"ipsec-console {self.file_path} (or ipsec-console daemon {self.file_path})")
        return (f"This engine runs {os.path.basename(running)} and reads it again at its next start or "
                f"reload: {os.path.basename(self.file_path)} applied to it would be lost then. Save it "
                f"(ctrl+s) and run it: {run}.")

    @work(thread=True, group="policy-action", exclusive=True, exit_on_error=False)
    def _apply_checked(self, text: str, path: str | None) -> None:
        self.app.call_from_thread(self._apply_validated,
                                  validate_text(text, path, load_secrets=self._own_secrets()))

    def _apply_validated(self, v: Validation) -> None:
        self._show_validation(v)
        if not v.ok:
            self.notify(f"{len(v.errors)} error(s): nothing applied", title="Apply refused", severity="error")
            return
        d = diff_policies(self.running, v.policy)
        lines = []
        if d.added:
            lines.append("add " + ", ".join(d.added))
        if d.removed:
            lines.append("remove " + ", ".join(d.removed) + " (SAs deleted)")
        if d.changed:
            lines.append("change " + ", ".join(d.changed) + " (SAs renegotiated)")
        if d.rules_changed:
            lines.append("update rules")
        if d.engine_changed:
            lines.append("change engine settings")
        if not lines and v.text == self.running_text:
            self.notify("Nothing to apply", severity="information")
            return
        body = "; ".join(lines) or "no engine change (text only)"
        untouched = [c.name for c in self.running.connections if c.name not in d.removed + d.changed]
        if untouched:
            body += f". Untouched: {', '.join(untouched)}."

        def answered(ok: bool | None) -> None:
            if not ok:
                return
            policy, text = v.policy, v.text
            self._applying = text
            self.app.run_command("apply", lambda: self.app.runtime.apply_policy(policy, text),
                                 on_done=lambda res: self._applied(policy, text, res),
                                 on_error=self._apply_failed)

        self.app.push_screen(ConfirmScreen("Apply this policy to the running engine?", body, yes="Apply"),
                             answered)

    def _applied(self, policy: Policy, text: str, result) -> None:
        self._applying = None
        self.running = policy
        self.running_text = text
        self.running_saved = text == self.file_text
        parts = [f"{label} {', '.join(names)}" for label, names in
                 (("added", result.added), ("removed", result.removed), ("changed", result.changed)) if names]
        self.notify("; ".join(parts) or "no connection changed", title="Policy applied")
        self._validate_now()

    def _apply_failed(self, exc: BaseException) -> bool:
        self._applying = None
        if isinstance(exc, PolicyError):
            self.notify("\n".join(f.format() for f in exc.findings[:5]),
                        title="The engine refused the policy: nothing changed", severity="error", timeout=15)
            return True
        return False

    # ------------------------------------------------------------- tabs
    def action_next_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        new = TABS[(TABS.index(tabs.active) + 1) % len(TABS)] if tabs.active in TABS else TABS[0]
        tabs.active = new
        # Focus moves into the new tab: left in the hidden one, it would switch straight back.
        target = {"pol-tree-tab": "#pol-tree", "pol-toml-tab": "#pol-editor", "pol-diff-tab": "#pol-diff-box",
                  "pol-spd-tab": "#spd-src"}[new]
        self.query_one(target).focus()
