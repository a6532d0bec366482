"""Policies: the running policy as a tree, form and raw TOML editing with
inline validation and lint, the diff against the running policy, Apply
(only changed connections are touched) and Save (atomic, with a backup), and
the question "what happens to this packet?" answered by the SPD.

A policy that does not validate is never applied nor saved: both actions
re-validate the exact text first, in the same worker that would act.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.suggester import SuggestFromList
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (Button, Input, Label, Select, Static, Switch, TabbedContent, TabPane, TextArea,
                             Tree)

from engine.policy.model import Policy

from console import policy_api
from console import policy_form as pf
from console.screens.base import ConsoleScreen


def _toml_language() -> str | None:
    try:
        import tree_sitter_toml  # noqa: F401
    except ImportError:
        return None
    return "toml"


class Validation:
    """The outcome of validating one exact text."""

    def __init__(self, text: str, policy: Policy | None, findings: list, unavailable: str = "") -> None:
        self.text = text
        self.policy = policy
        self.findings = findings
        self.unavailable = unavailable

    @property
    def errors(self) -> list:
        return [f for f in self.findings if policy_api.severity_of(f) == "error"]

    @property
    def warnings(self) -> list:
        return [f for f in self.findings if policy_api.severity_of(f) == "warning"]

    @property
    def ok(self) -> bool:
        return self.policy is not None and not self.errors and not self.unavailable


def validate_text(text: str, path: str | None) -> Validation:
    """Parse and lint ``text`` with the policy layer (safe to call from a thread)."""
    parse = policy_api.get("parse_policy")
    if parse is None:
        return Validation(text, None, [], "validation unavailable: engine.policy has no parse_policy")
    error_type = policy_api.policy_error_type()
    try:
        policy = parse(text, path)
    except error_type as exc:
        return Validation(text, None, policy_api.findings_of(exc))
    lint = policy_api.get("lint")
    findings = list(lint(policy)) if lint is not None else []
    return Validation(text, policy, findings)


def atomic_write(path: str, text: str) -> None:
    """Console fallback when the policy layer has no save_text: temp file, fsync, rename, keep .bak."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if p.exists():
            os.replace(p, p.with_name(p.name + ".bak"))
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class PoliciesScreen(ConsoleScreen):
    """See the module docstring. ctrl+s saves, ctrl+g applies, ctrl+r reverts to the running policy."""

    TITLE_TEXT = "Policies"
    MODE = "policies"
    BINDINGS = [
        Binding("ctrl+g", "apply", "Apply"),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+r", "revert", "Revert"),
        Binding("ctrl+t", "next_tab", "Next tab"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.running: Policy | None = None
        self.running_text = ""
        self.validation: Validation | None = None
        self._form_node: tuple | None = None
        self._form_consent = False
        self._loading_editor = False
        self._validate_timer = None
        self._pending_cursor: tuple | None = None
        self._restoring = False

    # ------------------------------------------------------------- layout
    def body(self) -> ComposeResult:
        with TabbedContent(id="pol-tabs"):
            with TabPane("Tree & form", id="pol-tree-tab"):
                with Horizontal():
                    tree: Tree = Tree("policy", id="pol-tree")
                    yield tree
                    yield VerticalScroll(id="pol-form")
            with TabPane("TOML", id="pol-toml-tab"):
                yield TextArea.code_editor("", language=_toml_language(), id="pol-editor", soft_wrap=False,
                                           theme="css")
            with TabPane("Diff", id="pol-diff-tab"):
                with VerticalScroll():
                    yield Static("", id="pol-diff")
            with TabPane("Ask the SPD", id="pol-spd-tab"):
                with Vertical(id="spd-form"):
                    yield Label("What happens to a packet from A to B?")
                    with Horizontal(classes="spd-row"):
                        yield Input(placeholder="source, e.g. 198.51.100.5", id="spd-src", compact=True)
                        yield Input(placeholder="destination", id="spd-dst", compact=True)
                    with Horizontal(classes="spd-row"):
                        yield Input("tcp", placeholder="proto", id="spd-proto", compact=True)
                        yield Input(placeholder="src port", id="spd-sport", compact=True)
                        yield Input(placeholder="dst port", id="spd-dport", compact=True)
                        yield Select([("outbound", "out"), ("inbound", "in")], value="out", allow_blank=False,
                                     id="spd-dir", compact=True)
                    yield Button("Ask (Enter)", id="spd-ask", compact=True)
                    yield Static("", id="spd-answer")
        yield Static("", id="pol-findings")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#pol-tree", Tree).show_root = True
        self.app.run_command("load policy", self.app.runtime.policy, on_done=self._loaded)

    def _loaded(self, result: tuple[Policy, str]) -> None:
        policy, text = result
        self.running = policy
        self.running_text = text
        self._set_editor(text)
        self._form_consent = False
        first = ("connection", policy.connections[0].name) if policy.connections else ("engine",)
        self._pending_cursor = first
        self._validate_now()
        self.query_one("#pol-tree", Tree).focus()

    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        if "policy" in parts and self.running is not None and self.app.store.last_applied is not None:
            pass  # the running policy is updated by our own apply; an external one reloads below
        if "policy" in parts and not self._dirty():
            self.app.run_command("load policy", self.app.runtime.policy, on_done=self._loaded)

    # ------------------------------------------------------------- text and validation
    def _text(self) -> str:
        return self.query_one("#pol-editor", TextArea).text

    def _dirty(self) -> bool:
        return self.running is not None and self._text() != self.running_text

    def _set_editor(self, text: str) -> None:
        self._loading_editor = True
        editor = self.query_one("#pol-editor", TextArea)
        editor.load_text(text)
        self._loading_editor = False

    @on(TextArea.Changed, "#pol-editor")
    def _editor_changed(self, event: TextArea.Changed) -> None:
        if self._validate_timer is not None:
            self._validate_timer.stop()
        self._validate_timer = self.set_timer(0.3, self._validate_now)

    def _path(self) -> str | None:
        return self.running.path if self.running is not None else None

    def _validate_now(self) -> None:
        self._validate(self._text(), self._path())

    @work(thread=True, group="validate", exclusive=True, exit_on_error=False)
    def _validate(self, text: str, path: str | None) -> None:
        result = validate_text(text, path)
        self.app.call_from_thread(self._show_validation, result)

    def _show_validation(self, v: Validation) -> None:
        if v.text != self._text():
            return  # stale: a newer validation is on its way
        self.validation = v
        box = self.query_one("#pol-findings", Static)
        colors = self.app.theme_colors()
        out = Text()
        if v.unavailable:
            out.append(v.unavailable, style=colors.get("warning", ""))
        elif v.ok:
            out.append("✓ valid", style=f"bold {colors.get('success', '')}")
            out.append(f" — {len(v.warnings)} lint warning(s)" if v.warnings else " — no lint warnings")
            out.append("  (pending changes)" if self._dirty() else "  (same as running)", style="dim")
        else:
            out.append(f"✗ {len(v.errors)} error(s): not applicable, not savable", style=f"bold {colors.get('error', '')}")
        for f in v.errors + v.warnings:
            sev = policy_api.severity_of(f)
            out.append("\n")
            out.append(policy_api.format_finding(f), style=colors.get("error" if sev == "error" else "warning", ""))
        box.update(out)
        self._refresh_tree()
        self._refresh_form_findings()
        self._refresh_diff()

    # ------------------------------------------------------------- tree
    def _shown_policy(self) -> Policy | None:
        if self.validation is not None and self.validation.policy is not None:
            return self.validation.policy
        return self.running

    def _refresh_tree(self) -> None:
        policy = self._shown_policy()
        tree = self.query_one("#pol-tree", Tree)
        if policy is None:
            return
        name = Path(policy.path).name if policy.path else "policy"
        cursor = tree.cursor_node.data if tree.cursor_node is not None else None
        if self._pending_cursor is not None:
            cursor, self._pending_cursor = self._pending_cursor, None
        tree.clear()
        tree.root.set_label(name)
        tree.root.data = ("engine",)
        tree.root.add_leaf(f"engine ({policy.engine.datapath})", data=("engine",))
        conns = tree.root.add("connections", data=None, expand=True)
        for c in policy.connections:
            cn = conns.add(f"{c.name}  {', '.join(c.remote_addrs) or '%any'}", data=("connection", c.name),
                           expand=True)
            for ch in c.children:
                ts = f"{' '.join(str(t) for t in ch.local_ts)} ⇄ {' '.join(str(t) for t in ch.remote_ts)}"
                cn.add_leaf(f"{ch.name} ({ch.mode}) {ts}", data=("child", c.name, ch.name))
        rules = tree.root.add("rules", data=None, expand=True)
        for r in policy.rules:
            ts = " ".join(str(t) for t in r.remote_ts)
            rules.add_leaf(f"{r.name}: {r.action} {ts}", data=("rule", r.name))
        tree.root.expand()
        if cursor is not None:
            # Everything is expanded, so a node's line is its depth-first position; new
            # nodes only learn their line numbers at the next render.
            for line, node in enumerate(_walk(tree.root)):
                if node.data == cursor:
                    tree.cursor_line = line
                    if self._form_node != cursor:
                        self._build_form(cursor)
                    break

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        if event.node is not event.control.cursor_node:
            return  # a stale highlight from rebuilding the tree
        data = event.node.data
        if data is not None and data != self._form_node:
            self._build_form(data)

    # ------------------------------------------------------------- form
    async def _rebuild_form(self, node: tuple) -> None:
        form = self.query_one("#pol-form", VerticalScroll)
        await form.remove_children()
        doc = pf.load_doc(self._text())
        title = " / ".join(pf.node_path(node)[1::2] if node[0] != "engine" else ("engine",))
        widgets = [Label(f"[b]{title}[/b]", classes="form-title")]
        if doc is None:
            widgets.append(Static("The TOML does not parse: fix it in the TOML tab first.", classes="form-error"))
        else:
            for field in pf.fields_for(node):
                value = pf.get_value(doc, node, field)
                fid = "f-" + field.key.replace(".", "-")
                widgets.append(Label(field.label + (f"  [dim]{field.help}[/dim]" if field.help else ""),
                                     classes="form-label"))
                if field.kind == "bool":
                    widgets.append(Switch(bool(value), id=fid))
                elif field.kind == "choice":
                    # An Input with suggestions, not a Select: typed fast, and validated like any text.
                    widgets.append(Input(pf.display(value, field), id=fid, compact=True,
                                         placeholder=" | ".join(field.choices),
                                         suggester=SuggestFromList(field.choices, case_sensitive=False)))
                else:
                    widgets.append(Input(pf.display(value, field), id=fid, compact=True))
                widgets.append(Static("", id=fid + "-msg", classes="form-msg"))
        for w in widgets:
            w.form_node = node  # edits count only for the form they belong to
        await form.mount_all(widgets)
        self._refresh_form_findings()

    def _build_form(self, node: tuple) -> None:
        self._form_node = node
        self._form_worker(node)

    @work(group="form", exclusive=True, exit_on_error=False)
    async def _form_worker(self, node: tuple) -> None:
        await self._rebuild_form(node)

    def _field_for(self, widget_id: str | None) -> pf.Field | None:
        if self._form_node is None or not widget_id:
            return None
        for field in pf.fields_for(self._form_node):
            if "f-" + field.key.replace(".", "-") == widget_id:
                return field
        return None

    def _form_edit(self, widget, raw, *, confirmed: bool = False) -> None:
        # Only a person typing in the current form edits: not the Changed events that
        # widgets post when mounted, nor late ones from a form already replaced.
        if not confirmed and (not widget.has_focus or getattr(widget, "form_node", None) != self._form_node):
            return
        widget_id = widget.id
        field = self._field_for(widget_id)
        if field is None or self._form_node is None:
            return
        text = self._text()
        doc = pf.load_doc(text)
        if doc is None:
            return
        node = self._form_node
        value = raw if field.kind == "bool" else pf.parse_input(raw if raw is not None else "", field)
        if pf.get_value(doc, node, field) == value:
            return
        if not self._form_consent and pf.is_hand_written(text):
            from console.screens.confirm import ConfirmScreen

            def answered(ok: bool | None) -> None:
                if ok:
                    self._form_consent = True
                    self._form_edit(widget, raw, confirmed=True)
                    widget.focus()
                else:
                    self._build_form(node)  # put the old value back

            self.app.push_screen(ConfirmScreen(
                "Rewrite the file from the form?",
                "This policy file was written by hand. A form edit re-serializes it: its comments and "
                "layout are lost (the TOML tab keeps them if you edit there instead). Continue?",
                yes="Rewrite"), answered)
            return
        pf.set_value(doc, node, field, value)
        self._set_editor(pf.dump_doc(doc))
        self._editor_changed(None)  # validate soon

    @on(Input.Changed, "#pol-form Input")
    def _input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._form_edit(event.input, event.value)

    @on(Switch.Changed, "#pol-form Switch")
    def _switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self._form_edit(event.switch, event.value)

    def _refresh_form_findings(self) -> None:
        node = self._form_node
        if node is None or self.validation is None:
            return
        colors = self.app.theme_colors()
        for field in pf.fields_for(node):
            kp = pf.key_path(node, field)
            msgs = [f for f in self.validation.findings
                    if getattr(f, "key_path", "") == kp or getattr(f, "key_path", "").startswith((kp + ".", kp + "["))]
            try:
                box = self.query_one(f"#f-{field.key.replace('.', '-')}-msg", Static)
            except Exception:
                continue
            out = Text()
            for f in msgs:
                sev = policy_api.severity_of(f)
                if len(out):
                    out.append("\n")
                out.append(("✗ " if sev == "error" else "⚠ ") + f.message,
                           style=colors.get("error" if sev == "error" else "warning", ""))
            box.update(out)
            box.set_class(bool(msgs), "-shown")

    # ------------------------------------------------------------- diff
    def _refresh_diff(self) -> None:
        box = self.query_one("#pol-diff", Static)
        colors = self.app.theme_colors()
        out = Text()
        v = self.validation
        text = self._text()
        if self.running is None:
            box.update("(loading the running policy)")
            return
        if text == self.running_text:
            out.append("No pending change: the editor holds the running policy.\n", style="dim")
        elif v is None or not v.ok:
            out.append("The pending text does not validate: Apply and Save are refused until it does.\n",
                       style=f"bold {colors.get('error', '')}")
        else:
            d = policy_api.diff(self.running, v.policy)
            out.append("Apply will:\n", style="bold")
            for name in d.added:
                out.append(f"  + add connection {name}\n", style=colors.get("success", ""))
            for name in d.removed:
                out.append(f"  - remove connection {name} (its SAs are deleted)\n", style=colors.get("error", ""))
            for name in d.changed:
                out.append(f"  ~ change connection {name} (its SAs are renegotiated)\n",
                           style=colors.get("warning", ""))
            if d.rules_changed:
                out.append("  ~ update the bypass/discard rules\n", style=colors.get("warning", ""))
            if d.engine_changed:
                out.append("  ~ change [engine] settings\n", style=colors.get("warning", ""))
            untouched = [c.name for c in self.running.connections
                         if c.name not in d.removed + d.changed]
            if untouched:
                out.append(f"  untouched, SAs stay up: {', '.join(untouched)}\n", style="dim")
            if d.empty:
                out.append("  nothing in the engine (only formatting or comments changed)\n", style="dim")
        out.append("\n")
        for line in difflib.unified_diff(self.running_text.splitlines(), text.splitlines(),
                                         "running", "pending", lineterm="", n=2):
            style = ""
            if line.startswith("+") and not line.startswith("+++"):
                style = colors.get("success", "")
            elif line.startswith("-") and not line.startswith("---"):
                style = colors.get("error", "")
            elif line.startswith("@@"):
                style = "dim"
            out.append(line + "\n", style=style)
        box.update(out)

    # ------------------------------------------------------------- apply / save / revert
    def action_apply(self) -> None:
        if self.running is None:
            return
        self._apply_checked(self._text(), self._path())

    @work(thread=True, group="policy-action", exclusive=True, exit_on_error=False)
    def _apply_checked(self, text: str, path: str | None) -> None:
        v = validate_text(text, path)
        self.app.call_from_thread(self._apply_validated, v)

    def _apply_validated(self, v: Validation) -> None:
        self._show_validation(v)
        if not v.ok:
            self.notify(v.unavailable or f"{len(v.errors)} error(s): nothing applied", title="Apply refused",
                        severity="error")
            return
        d = policy_api.diff(self.running, v.policy)
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
        from console.screens.confirm import ConfirmScreen

        def answered(ok: bool | None) -> None:
            if not ok:
                return
            policy, text = v.policy, v.text
            self.app.run_command("apply", lambda: self.app.runtime.apply_policy(policy, text),
                                 on_done=lambda res: self._applied(policy, text, res),
                                 on_error=self._apply_failed)

        self.app.push_screen(ConfirmScreen("Apply this policy to the running engine?", body, yes="Apply"),
                             answered)

    def _applied(self, policy: Policy, text: str, result) -> None:
        self.running = policy
        self.running_text = text
        parts = []
        for label, names in (("added", result.added), ("removed", result.removed), ("changed", result.changed)):
            if names:
                parts.append(f"{label} {', '.join(names)}")
        self.notify("; ".join(parts) or "no connection changed", title="Policy applied")
        self._validate_now()

    def _apply_failed(self, exc: BaseException) -> bool:
        if isinstance(exc, policy_api.policy_error_type()):
            findings = policy_api.findings_of(exc)
            self.notify("\n".join(policy_api.format_finding(f) for f in findings[:5]),
                        title="The engine refused the policy: nothing changed", severity="error", timeout=15)
            return True
        return False

    def action_save(self) -> None:
        path = self._path()
        if path is None:
            self.notify("This policy has no file to save to", severity="error")
            return
        self._save_checked(self._text(), path)

    @work(thread=True, group="policy-action", exclusive=True, exit_on_error=False)
    def _save_checked(self, text: str, path: str) -> None:
        v = validate_text(text, path)
        if not v.ok:
            self.app.call_from_thread(self._save_refused, v)
            return
        save_text = policy_api.get("save_text")
        try:
            if save_text is not None:
                save_text(text, path)
            else:
                atomic_write(path, text)
        except OSError as exc:
            self.app.call_from_thread(self.notify, f"{path}: {exc.strerror or exc}", title="Save failed",
                                      severity="error")
            return
        self.app.call_from_thread(self.notify, f"saved {path} (previous version kept as .bak)", title="Saved")

    def _save_refused(self, v: Validation) -> None:
        self._show_validation(v)
        self.notify(v.unavailable or f"{len(v.errors)} error(s): the file was not written",
                    title="Save refused", severity="error")

    def action_revert(self) -> None:
        if self.running is None:
            return
        self._set_editor(self.running_text)
        self._form_consent = False
        self._validate_now()
        if self._form_node is not None:
            self._build_form(self._form_node)

    def action_next_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        ids = ["pol-tree-tab", "pol-toml-tab", "pol-diff-tab", "pol-spd-tab"]
        tabs.active = ids[(ids.index(tabs.active) + 1) % len(ids)] if tabs.active in ids else ids[0]

    # ------------------------------------------------------------- SPD question
    @on(Button.Pressed, "#spd-ask")
    @on(Input.Submitted, "#spd-form Input")
    def ask_spd(self, event=None) -> None:
        answer = self.query_one("#spd-answer", Static)
        policy = self._shown_policy()
        spd_cls = policy_api.get("Spd")
        if policy is None or spd_cls is None:
            answer.update("The SPD is not available in this build." if spd_cls is None else "No policy loaded.")
            return
        src = self.query_one("#spd-src", Input).value.strip()
        dst = self.query_one("#spd-dst", Input).value.strip()
        proto = self.query_one("#spd-proto", Input).value.strip() or "0"
        sport_t = self.query_one("#spd-sport", Input).value.strip()
        dport_t = self.query_one("#spd-dport", Input).value.strip()
        direction = self.query_one("#spd-dir", Select).value
        try:
            proto_v: int | str = int(proto) if proto.isdigit() else proto
            sport = int(sport_t) if sport_t else None
            dport = int(dport_t) if dport_t else None
            decision = spd_cls(policy).lookup(src, dst, proto_v, sport, dport, direction=direction)
        except (ValueError, KeyError) as exc:
            answer.update(Text(f"Cannot ask that: {exc}", style=self.app.theme_colors().get("error", "")))
            return
        colors = self.app.theme_colors()
        style = {"protect": colors.get("success"), "bypass": colors.get("warning"),
                 "discard": colors.get("error")}.get(decision.action) or ""
        which = "pending policy" if (self.validation and self.validation.ok and self._dirty()) else "running policy"
        out = Text()
        out.append(f"{decision.action.upper()}", style=f"bold {style}")
        out.append(f"  ({which})\n")
        out.append(decision.explain())
        answer.update(out)


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)
