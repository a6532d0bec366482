"""The Policies screen's edits that are more than typing: adding, copying and
deleting tree nodes, setting a PSK, and the file itself (save, save as, a new
file from a template, revert). Mixins of ``PoliciesScreen``: they use its
editor text, validation and tree (``_text``, ``_set_editor``, ``_validate_now``,
``file_path`` ...)."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.widgets import TabbedContent

from engine.policy.findings import PolicyError
from engine.policy.samples import sample_names, sample_path
from engine.policy.save import save_text

from console import policy_form as pf
from console.policy_state import Validation, is_shipped_sample, read_file, validate_text
from console.screens.confirm import ConfirmScreen
from console.screens.dialogs import AddDialog, NewFileDialog, PskDialog, TextPrompt
from console.secrets_file import set_psk
from console.widgets.fields import focus_now
from console.widgets.policy_tree import PolicyTree


def editable(node: tuple | None) -> bool:
    """A node with a form (not the file root nor a section heading)."""
    return node is not None and node[0] in ("engine", "connection", "child", "rule", "pool")


def named(node: tuple | None) -> bool:
    """A node that has a name of its own (connection, CHILD SA config, rule, pool)."""
    return node is not None and node[0] in pf.KIND_WORDS


class TreeEdits:
    """a / c / x / k / Enter on the tree."""

    # ------------------------------------------------------------- the tree's actions
    def on_policy_tree_act(self, event: PolicyTree.Act) -> None:
        self.tree_act(event)

    def tree_act(self, event: PolicyTree.Act) -> None:
        node = event.node
        if event.what == "edit":
            if editable(node):
                inputs = self.query("#pol-form Input, #pol-form Switch")
                if inputs:
                    focus_now(inputs.first())  # the value typed right after Enter goes there, not to the tree
            elif node is not None:
                self.query_one(PolicyTree).cursor_node.toggle()
            return
        if pf.load_doc(self._text()) is None:
            self.notify("The TOML does not parse: fix it in the TOML tab first", severity="error")
            return
        {"add": self._ask_add, "duplicate": self._ask_duplicate, "delete": self._ask_delete,
         "psk": self._ask_psk}[event.what](node)

    def _change_doc(self, change, select: tuple | None) -> bool:
        doc = pf.load_doc(self._text())
        try:
            change(doc)
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return False
        self._pending_cursor = select
        self._set_editor(pf.dump_doc(doc))
        # The tree shows the change (its cursor on what was added) now, not after the editor's 0.3 s
        # settle: Enter or arrows typed right after an add acted on the node the cursor was on before.
        self._refresh_tree()
        return True

    def _ask_add(self, node: tuple | None) -> None:
        doc = pf.load_doc(self._text())
        conns = [n for n in self.query_one(PolicyTree).nodes() if n[0] == "connection"]
        here = node[1] if node and node[0] in ("connection", "child") else None
        choices: list[tuple[str, tuple]] = []
        if here:
            choices.append((f"CHILD SA config of {here}", ("child", here)))
        choices.append(("connection", ("connection",)))
        choices += [(f"CHILD SA config of {c[1]}", ("child", c[1])) for c in conns if c[1] != here]
        choices += [("bypass/discard rule", ("rule",))]
        if self.pools:
            choices.append(("address pool", ("pool",)))
        if node and node[0] in ("rule", "pool") or node == ("section", "rule") or node == ("section", "pool"):
            kind = node[1] if node[0] == "section" else node[0]
            choices.sort(key=lambda c: c[1][0] != kind)

        def suggest(prefix: tuple) -> str:
            base = {"connection": "new-connection", "rule": "new-rule", "pool": "new-pool"}.get(
                prefix[0], f"{prefix[-1]}-child" if prefix[0] == "child" else "new")
            if not pf.exists(doc, prefix + (base,)):
                return base
            return pf.unique_name(doc, prefix + (base,))

        def check(prefix: tuple, name: str) -> str:
            if not pf.valid_name(name):
                return f"1 to {pf.NAME_MAX} letters, digits, - _ . only, no spaces"
            if pf.exists(doc, prefix + (name,)):
                return f"{name} already exists"
            return ""

        def added(new: tuple | None) -> None:
            if new is not None and self._change_doc(lambda d: pf.add_node(d, new), new):
                self.notify(f"added {pf.KIND_WORDS[new[0]]} {new[-1]}: fill in its form (Enter)", title="Policy")

        self.app.push_screen(AddDialog(choices, suggest, check), added)

    def _ask_duplicate(self, node: tuple | None) -> None:
        if not named(node):
            self.notify("Select a connection, CHILD SA config, rule or pool to copy", severity="warning")
            return
        doc = pf.load_doc(self._text())

        def check(name: str) -> str:
            if not pf.valid_name(name):
                return f"1 to {pf.NAME_MAX} letters, digits, - _ . only, no spaces"
            return f"{name} already exists" if pf.exists(doc, node[:-1] + (name,)) else ""

        def copied(name: str | None) -> None:
            if name is not None:
                self._change_doc(lambda d: pf.duplicate_node(d, node, name), node[:-1] + (name,))

        self.app.push_screen(TextPrompt(f"Copy {pf.KIND_WORDS[node[0]]} {node[-1]} as", "The copy gets every "
                                        "setting (a connection its CHILD SA configs too).",
                                        pf.unique_name(doc, node), check=check), copied)

    def _ask_delete(self, node: tuple | None) -> None:
        if not named(node):
            self.notify("Select a connection, CHILD SA config, rule or pool to delete", severity="warning")
            return
        # A CHILD SA config by its connection too: "Delete CHILD SA config lan?" did not say which lan.
        what = f"{pf.KIND_WORDS[node[0]]} {' / '.join(node[1:]) if node[0] == 'child' else node[-1]}"
        body = "It goes from the edited text; Save and Apply make it final (ctrl+r reverts)."
        if node[0] == "connection":
            body = "Its CHILD SA configs go with it. " + body

        def answered(ok: bool | None) -> None:
            if ok:
                self._change_doc(lambda d: pf.delete_node(d, node), ("connection", node[1]) if node[0] == "child"
                                 else None)

        self.app.push_screen(ConfirmScreen(f"Delete {what}?", body, yes="Delete", danger=True), answered)

    def _ask_psk(self, node: tuple | None) -> None:
        if not node or node[0] not in ("connection", "child"):
            self.notify("Select a connection to set its pre-shared key", severity="warning")
            return
        if self.file_path is None:
            self.notify("Save the policy to a file first (ctrl+o): the secrets file goes next to it",
                        severity="warning")
            return
        conn = ("connection", node[1])
        doc = pf.load_doc(self._text())
        ids = [str(pf.get_value(doc, conn, f) or "") for f in pf.CONNECTION_FIELDS if f.key.endswith(".id")]
        ids = [i for i in ids if i]
        secrets = (doc.unwrap().get("engine") or {}).get("secrets")
        name = secrets or f"{Path(self.file_path).stem}.secrets.toml"
        target = Path(self.file_path).parent / name

        def typed(secret: str | None) -> None:
            if secret is None:
                return
            if not secrets:  # the policy names its new secrets file
                engine_field = next(f for f in pf.ENGINE_FIELDS if f.key == "secrets")
                self._change_doc(lambda d: pf.set_value(d, ("engine",), engine_field, name), conn)
            self._write_psk(target, node[1], ids, secret)

        self.app.push_screen(PskDialog(node[1], name, ids), typed)

    @work(thread=True, group="policy-action", exclusive=True, exit_on_error=False)
    def _write_psk(self, target: Path, entry: str, ids: list[str], secret: str) -> None:
        try:
            used = set_psk(target, entry, ids, secret)
        except (OSError, ValueError) as exc:
            self.app.call_from_thread(self.notify, f"{target}: {getattr(exc, 'strerror', None) or exc}",
                                      title="PSK not written", severity="error")
            return
        self.app.call_from_thread(self.notify, f"[ike.{used}] in {target.name} (mode 0600)", title="PSK written")
        self.app.call_from_thread(self._validate_now)



class FileEdits:
    """ctrl+s, ctrl+o, ctrl+n, ctrl+r."""

    # ------------------------------------------------------------- save, save as, new file, revert
    def action_save(self) -> None:
        if self.file_path is None:
            self.action_save_as()
            return
        if is_shipped_sample(self.file_path):
            self.notify("This is a policy shipped with ipsec-console: save your version elsewhere (ctrl+o)",
                        title="Save as", severity="warning")
            self.action_save_as()
            return
        self._save_checked(self._text(), self.file_path)

    @work(thread=True, group="policy-action", exclusive=True, exit_on_error=False)
    def _save_checked(self, text: str, path: str, overwrite: bool = False) -> None:
        v = validate_text(text, path, load_secrets=self._own_secrets())
        if not v.ok:
            self.app.call_from_thread(self._save_refused, v)
            return
        on_disk = read_file(path)
        known = self.file_text if path == self.file_path else None
        if not overwrite and on_disk is not None and on_disk != known and on_disk != text:
            # Changed by someone else since it was read here (or, for Save as, created meanwhile).
            self.app.call_from_thread(self._ask_overwrite, text, path)
            return
        try:
            save_text(text, path, load_secrets=self._own_secrets())
        except PolicyError as exc:
            self.app.call_from_thread(self._save_refused, Validation(text, None, list(exc.findings)))
            return
        except OSError as exc:
            self.app.call_from_thread(self.notify, f"{path}: {exc.strerror or exc}", title="Save failed",
                                      severity="error")
            return
        self.app.call_from_thread(self._saved, text, path)

    def _saved(self, text: str, path: str) -> None:
        existed = self.file_text is not None and self.file_path == path
        self.file_path = path
        self.file_text = text
        if text == self.running_text:
            self.running_saved = True
        note = " (previous version kept as .bak)" if existed else ""
        self.notify(f"saved {path}{note}", title="Saved")
        self._validate_now()

    def _ask_overwrite(self, text: str, path: str) -> None:
        name = Path(path).name

        def answered(ok: bool | None) -> None:
            if ok:
                self._save_checked(text, path, overwrite=True)

        self.app.push_screen(ConfirmScreen(
            f"{name} changed on disk: overwrite it?",
            f"Another program or person changed {path} since the console read it. Saving replaces "
            f"their change with this text (theirs is kept as {name}.bak until the next save). To keep "
            f"it, cancel and merge it in the TOML tab.", yes="Overwrite", danger=True), answered)

    def _save_refused(self, v: Validation) -> None:
        self._show_validation(v)
        self.notify(f"{len(v.errors)} error(s): the file was not written", title="Save refused", severity="error")

    def _check_new_path(self, text: str) -> str:
        if not text:
            return "type a file name, e.g. /etc/ipsec-console/gw.toml"
        p = Path(text).expanduser()
        if not p.name.endswith(".toml"):
            return "a policy file ends in .toml"
        if p.exists():
            return f"{p} exists: open it with ipsec-console {p}, or choose a new name"
        if not p.absolute().parent.is_dir():
            return f"no folder {p.absolute().parent}"
        if is_shipped_sample(str(p.absolute())):
            return "not over the shipped samples: choose another folder"
        return ""

    def _suggested_path(self) -> str:
        folder = Path(self.file_path).parent if self.file_path and not is_shipped_sample(self.file_path) \
            else Path.cwd()
        return str(folder / "new-policy.toml")

    def action_save_as(self) -> None:
        def chosen(answer) -> None:
            if answer is not None:
                path = str(Path(answer[0]).expanduser().absolute())
                self._save_checked(self._text(), path)

        # Read once: the text cannot change under the dialog, and the note follows every key typed.
        doc = pf.load_doc(self._text())
        engine = (doc.unwrap().get("engine") or {}) if doc is not None else {}
        secrets = engine.get("secrets") if isinstance(engine, dict) else None
        self.app.push_screen(NewFileDialog("Save the policy as", self._suggested_path(), None,
                                           self._check_new_path,
                                           note=lambda typed: self._secrets_note(typed, secrets)), chosen)

    @staticmethod
    def _secrets_note(typed: str, secrets) -> str:
        """The secrets file a copy at ``typed`` reads: [engine] secrets is relative to the policy file,
        so a copy in another folder looks for it there, not beside the original."""
        if not secrets or not typed:
            return ""
        target = Path(typed).expanduser().absolute().parent / Path(str(secrets)).expanduser()
        missing = "" if target.is_file() else " (missing: copy it there, or change [engine] secrets)"
        return f"The copy reads its secrets from {target}{missing}"

    def action_new_file(self) -> None:
        templates = [("an empty policy", "")] + [(f"the sample {n}", n) for n in sample_names() if n != "lab.toml"
                                                  and not n.startswith("lab-")]

        def chosen(answer) -> None:
            if answer is None:
                return
            path, template = answer
            text = pf.EMPTY_POLICY if not template else sample_path(template).read_text(encoding="utf-8")
            self.open_new(str(Path(path).expanduser().absolute()), text)

        self.app.push_screen(NewFileDialog("New policy file", self._suggested_path(), templates,
                                           self._check_new_path), chosen)

    def open_new(self, path: str, text: str) -> None:
        """Edit a file that does not exist yet (written by the first Save)."""
        self.file_path = path
        self.file_text = None
        self._pending_cursor = ("engine",)
        self._set_editor(text)
        self.query_one(TabbedContent).active = "pol-tree-tab"
        self.query_one(PolicyTree).focus()
        self.notify(f"{path} is new: add connections with a, save with ctrl+s", title="New file")

    def action_revert(self) -> None:
        if self.running is None:
            return
        target = self.running_text if self._can_apply() else (self.file_text or "")
        if self._text() == target:
            self.notify("No edits to revert", severity="information")
            return

        def answered(ok: bool | None) -> None:
            if ok:
                self._set_editor(target)
                if self._form_node is not None:
                    self._build_form(self._form_node)

        # One key replaced every edit not saved (and the editor's undo history with them): ask first.
        what = "the running policy" if self._can_apply() else "the saved file"
        self.app.push_screen(ConfirmScreen("Revert the edits?", f"The text goes back to {what}; the edits made "
                                           "since are lost (undo does not bring them back).", yes="Revert",
                                           danger=True), answered)

