"""The Policies screen's panels, as mixins of PoliciesScreen (console/screens/policies.py): the form
of the tree's selection, the Diff tab, and the SPD question. Their message handlers (``@on``) stay
on the screen: Textual reads them only from a class of its own (a Screen), not from a mixin."""

from __future__ import annotations

import difflib

from rich.text import Text
from textual import work
from textual.containers import VerticalScroll
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, Select, Static, Switch

from engine.policy import ts as ts_syntax
from engine.policy.diff import diff_policies
from engine.policy.spd import Spd

from console import policy_form as pf
from console.widgets.fields import Field

LONG_VALUE = 40
"""Form values longer than this are also shown wrapped under their field (narrow screens), until the
field's width is known (`_show_full`): then those the field cuts."""


def finding_style(colors: dict, f) -> str:
    """Errors red, warnings yellow, advice (info) in the theme's primary colour: seen, not alarming."""
    return colors.get({"error": "error", "info": "primary"}.get(f.severity, "warning"), "")


class FormPanel:
    """The form of the node selected in the tree: one field per setting, edits written through tomlkit
    into the editor's text, the findings of each field under it."""

    async def _rebuild_form(self, node: tuple) -> None:
        form = self.query_one("#pol-form", VerticalScroll)
        await form.remove_children()
        self._form_text = self._text()
        doc = pf.load_doc(self._form_text)
        title = "engine" if node[0] == "engine" else " / ".join(node[1:])
        widgets = [Label(f"[b]{title}[/b]  [dim]({pf.KIND_WORDS.get(node[0], node[0])})[/dim]", classes="form-title"),
                   # Findings about the section itself (a CHILD SA name used twice, a connection with
                   # no children): the findings line below the form is 5 lines at 80x24, cut there.
                   Static("", id="f-node-msg", classes="form-msg")]
        if doc is None:
            widgets.append(Static("The TOML does not parse: fix it in the TOML tab first.", classes="form-error"))
        elif not pf.exists(doc, node) and node[0] != "engine":
            widgets.append(Static("Not in the file any more.", classes="form-error"))
        else:
            for field in pf.fields_for(node, pools=self.pools):
                value = pf.get_value(doc, node, field)
                fid = pf.field_id(field)
                widgets.append(Static(field.label + (f"  [dim]{field.help}[/dim]" if field.help else ""),
                                      classes="form-label"))
                shown = pf.display(value, field)
                if field.kind == "bool":
                    widgets.append(Switch(bool(value), id=fid))
                elif field.kind == "choice":
                    # An Input with suggestions, not a Select: typed fast, and validated like any text.
                    choices = " | ".join(f"{c} (default)" if c == field.default else c for c in field.choices)
                    widgets.append(Field(shown, id=fid, compact=True, placeholder=choices,
                                         suggester=SuggestFromList(field.choices, case_sensitive=False)))
                else:
                    widgets.append(Field(shown, id=fid, compact=True))
                if isinstance(widgets[-1], Input):
                    widgets[-1].cursor_position = 0  # a long value shows its start, not an empty tail
                widgets.append(Static(shown if len(shown) > LONG_VALUE else "", id=fid + "-full",
                                      classes="form-full" + (" -shown" if len(shown) > LONG_VALUE else ""),
                                      markup=False))
                widgets.append(Static("", id=fid + "-msg", classes="form-msg"))
            if node[0] == "connection":
                widgets.append(Static(self._psk_line(doc, node), id="f-psk", classes="form-psk", markup=False))
        for w in widgets:
            w.form_node = node  # edits count only for the form they belong to
        await form.mount_all(widgets)
        self._refresh_form_findings()
        self.call_after_refresh(self._fit_full_values)

    def _fit_full_values(self) -> None:
        """Show a value whole under its field only when the field cuts it: at 80 columns the hybrid
        proposal (41 characters, every new connection's) fits its field and was shown twice."""
        for field in self.query("#pol-form Input"):
            if field.id:
                self._show_full(field, field.value)

    def _show_full(self, field, value: str) -> None:
        full = self.query(f"#{field.id}-full")
        if not full:
            return
        width = field.content_region.width
        cut = len(value) >= width if width > 0 else len(value) > LONG_VALUE  # (not laid out yet)
        full.first().update(value if cut else "")
        full.first().set_class(cut, "-shown")

    def _psk_line(self, doc, node: tuple) -> str:
        auth = {pf.get_value(doc, node, f) for f in pf.CONNECTION_FIELDS if f.key.endswith(".auth")}
        if "psk" not in auth:
            return ""
        secrets = (doc.unwrap().get("engine") or {}).get("secrets")
        where = f"in {secrets}" if secrets else "(no secrets file yet: k creates one)"
        return f"Pre-shared key: press k on the tree to set it {where}; it is never shown."

    def _build_form(self, node: tuple) -> None:
        self._form_node = node
        self._form_text = self._text()  # asked once for this text, not again at each refresh meanwhile
        self._form_asked += 1
        if not self._form_building:
            self._form_building = True
            self._form_worker()

    @work(group="form", exit_on_error=False)
    async def _form_worker(self) -> None:
        # One rebuild at a time, each to its end, then the latest one asked for meanwhile: a rebuild
        # cancelled half way (its removal awaits the fields' own tasks, and cancelling that cancels
        # them) could leave dead fields in the form, shown and never processing a message.
        try:
            while self._form_built != self._form_asked:
                asked = self._form_asked
                await self._rebuild_form(self._form_node)
                self._form_built = asked
        finally:
            self._form_building = False

    def _field_for(self, widget_id: str | None) -> pf.Field | None:
        if self._form_node is None or not widget_id:
            return None
        for field in pf.fields_for(self._form_node, pools=self.pools):
            if pf.field_id(field) == widget_id:
                return field
        return None

    def _form_edit(self, widget, raw) -> None:
        # Only a person typing in the current form edits: not the Changed events that
        # widgets post when mounted, nor late ones from a form already replaced. A field that had
        # focus counts even once focus moved on: its text typed with Tab in one burst changes it
        # as the Tab has already left (the check was has_focus: that text was lost).
        if not (widget.has_focus or getattr(widget, "focused_once", False)) \
                or getattr(widget, "form_node", None) != self._form_node:
            return
        field = self._field_for(widget.id)
        if field is None or self._form_node is None:
            return
        doc = pf.load_doc(self._text())
        if doc is None:
            return
        value = raw if field.kind == "bool" else pf.parse_input(raw if raw is not None else "", field)
        if pf.get_value(doc, self._form_node, field) == value:
            return
        pf.set_value(doc, self._form_node, field, value)
        self._set_editor(pf.dump_doc(doc))
        self._form_text = self._text()  # the form shows this text: no rebuild for its own edit
        if isinstance(raw, str):
            self._show_full(widget, raw)

    def _refresh_form_findings(self) -> None:
        node = self._form_node
        if node is None or self.validation is None or node[0] in ("file", "section"):
            return
        colors = self.app.theme_colors()
        own = ".".join(pf.node_path(node))
        boxes_and_findings = [("f-node", [f for f in self.validation.findings if f.key_path == own])]
        for field in pf.fields_for(node, pools=self.pools):
            kp = pf.key_path(node, field)
            boxes_and_findings.append((pf.field_id(field), [f for f in self.validation.findings if f.key_path == kp
                                                            or f.key_path.startswith((kp + ".", kp + "["))]))
        for fid, msgs in boxes_and_findings:
            boxes = self.query(f"#{fid}-msg")
            if not boxes:
                continue
            out = Text()
            for f in msgs:
                if len(out):
                    out.append("\n")
                out.append({"error": "✗ ", "info": "ℹ "}.get(f.severity, "⚠ ") + f.message,
                           style=finding_style(colors, f))
            boxes.first().update(out)
            boxes.first().set_class(bool(msgs), "-shown")


class DiffPanel:
    """The Diff tab: what Apply would do to the running engine, and the text's diff."""

    def _refresh_diff(self) -> None:
        box = self.query_one("#pol-diff", Static)
        colors = self.app.theme_colors()
        out = Text()
        v = self.validation
        text = self._text()
        if self.running is None:
            box.update("(loading the running policy)")
            return
        base = self.running_text if self._can_apply() else (self.file_text or "")
        if text == base and self._secrets_pending and base == self.running_text:
            out.append(f"The editor holds the running policy, but the PSK of {', '.join(self._secrets_pending)} "
                       "changed in the secrets file: Apply (ctrl+g) hands it to the engine (its SAs are "
                       "renegotiated).\n", style="bold")
        elif text == base:
            out.append("No pending change: the editor holds the running policy.\n", style="dim")
        elif v is None or not v.ok:
            out.append("The pending text does not validate: Apply and Save are refused until it does.\n",
                       style=f"bold {colors.get('error', '')}")
        elif self._can_apply():
            d = diff_policies(self.running, v.policy)
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
            untouched = [c.name for c in self.running.connections if c.name not in d.removed + d.changed]
            if untouched:
                out.append(f"  untouched, SAs stay up: {', '.join(untouched)}\n", style="dim")
            if d.empty:
                out.append("  nothing in the engine (only formatting or comments changed)\n", style="dim")
        out.append("\n")
        for line in difflib.unified_diff(base.splitlines(), text.splitlines(), "running", "pending",
                                         lineterm="", n=2):
            style = ""
            if line.startswith("+") and not line.startswith("+++"):
                style = colors.get("success", "")
            elif line.startswith("-") and not line.startswith("---"):
                style = colors.get("error", "")
            elif line.startswith("@@"):
                style = "dim"
            out.append(line + "\n", style=style)
        box.update(out)


class SpdQuestion:
    """The "Ask the SPD" tab: what happens to a packet from A to B."""

    def answer_spd(self) -> None:
        """Answer the question of the SPD tab's fields with the pending policy (if it validates) or the
        running one."""
        answer = self.query_one("#spd-answer", Static)
        v = self.validation
        policy = v.policy if v is not None and v.policy is not None else self.running
        if policy is None:
            answer.update("No policy loaded.")
            return
        src = self.query_one("#spd-src", Input).value.strip()
        dst = self.query_one("#spd-dst", Input).value.strip()
        proto = self.query_one("#spd-proto", Input).value.strip() or "0"
        sport_t = self.query_one("#spd-sport", Input).value.strip()
        dport_t = self.query_one("#spd-dport", Input).value.strip()
        direction = self.query_one("#spd-dir", Select).value
        colors = self.app.theme_colors()
        try:
            proto_v = ts_syntax.parse_protocol(proto)  # names and numbers, as a selector reads them
            sport, dport = (_spd_port(t, proto_v, what) for t, what in ((sport_t, "src"), (dport_t, "dst")))
            decision = Spd(policy).lookup(src, dst, proto_v, sport, dport, direction=direction)
        except (ValueError, KeyError) as exc:
            answer.update(Text(f"Cannot ask that: {exc}", style=colors.get("error", "")))
            return
        style = {"protect": colors.get("success"), "bypass": colors.get("warning"),
                 "discard": colors.get("error")}.get(decision.action) or ""
        which = "pending policy" if (v is not None and v.ok and self._text() != self.running_text) \
            else "running policy"
        out = Text()
        out.append(f"{decision.action.upper()}", style=f"bold {style}")
        out.append(f"  ({which})\n")
        out.append(decision.explain())
        answer.update(out)


def _spd_port(text: str, protocol: int, what: str) -> int | None:
    """A port of the SPD question: a number or a service name (/etc/services), as in a selector;
    for ICMP the type (src) or code (dst), 0-255. Empty: any. ValueError says what is wrong."""
    if not text:
        return None
    if protocol in (1, 58):
        if not (text.isascii() and text.isdigit()) or int(text) > 255:
            raise ValueError(f"ICMP {'type' if what == 'src' else 'code'} {text!r}: a number 0-255")
        return int(text)
    port = ts_syntax.port_number(text, protocol)
    if port is None:
        raise ValueError(f"unknown service {text!r}: not in the services database (/etc/services) "
                         "and not a port number 0-65535")
    return port
