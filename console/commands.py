"""The command palette: every action of the console and every connection.

Actions come from the app's and the current screen's bindings (so the
palette can never forget one the footer shows), plus per-connection
commands (open, negotiations, initiate, rekey, terminate), the PKI actions
(from any screen) and themes. An action the screen refuses right now
(``check_action`` False, e.g. revoke with no CA) is not offered.
"""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

from console.screens.help import screen_name

PKI_COMMANDS = (
    ("PKI: issue a certificate", "issue", "server or client certificate from the CA folder (key 6, i)"),
    ("PKI: revoke the selected certificate", "revoke", "confirmed; the CRL is re-signed (key 6, r)"),
    ("PKI: re-sign the CRL", "crl", "a fresh crl.pem for peers to load (key 6, c)"),
    ("PKI: initialize a CA", "init_ca", "when the folder holds none yet (key 6, n)"),
    ("PKI: open another CA folder", "folder", "for this session (key 6, f)"),
)


class ConsoleCommands(Provider):
    """Palette provider: actions, connections, themes."""

    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        screen = self.screen
        out: list[tuple[str, object, str]] = []
        seen: set[str] = set()
        # The screen the palette was opened from (not the palette itself).
        target = screen
        for node in (target, app):
            # Every key of an action, ours first (q before Textual's ctrl+q), and where it works in the
            # words the help screen uses: the palette said "key ctrl+q — ConsoleApp" for q Quit.
            keys: dict[str, list] = {}
            for binding in node._bindings.key_to_bindings.values() if hasattr(node, "_bindings") else ():
                for b in binding:
                    if b.description and b.action not in seen:
                        keys.setdefault(b.action, []).append(b)
            where = "everywhere" if node is app else screen_name(node)
            for action, bindings in keys.items():
                if action.isidentifier() and node.check_action(action, ()) is False:
                    continue
                seen.add(action)
                bindings.sort(key=lambda b: not b.id)
                shown = ", ".join(app.get_key_display(b) for b in bindings)
                out.append((bindings[0].description, partial(self._run_action, node, action),
                            f"key {shown} — {where}"))
        store = getattr(app, "store", None)
        snap = store.snapshot if store is not None else None
        if snap is not None:
            for conn in snap.connections:
                n = conn.name
                out += [
                    (f"{n}: open", partial(app.open_detail, n), f"connection {n} ({conn.state}): SA detail"),
                    (f"{n}: negotiations", partial(app.open_negotiations, None, n), "exchanges and failures"),
                    (f"{n}: initiate", partial(app.confirm_initiate, n), "bring it up (confirmed)"),
                    (f"{n}: rekey CHILD SAs", partial(app.confirm_rekey, n, ike=False), "confirmed"),
                    (f"{n}: rekey IKE SA", partial(app.confirm_rekey, n, ike=True), "confirmed"),
                    (f"{n}: terminate", partial(app.confirm_terminate, n), "take it down (confirmed)"),
                ]
        if hasattr(app, "open_pki"):  # on every screen, so "PKI" finds them all
            out += [(label, partial(app.open_pki, action), help_text) for label, action, help_text in PKI_COMMANDS]
        for name in sorted(app.available_themes):
            if name.startswith("ipsec-"):
                out.append((f"Theme: {name}", partial(setattr, app, "theme", name), "switch and remember"))
        return out

    @staticmethod
    async def _run_action(node, action: str) -> None:
        await node.run_action(action)

    async def discover(self) -> Hits:
        # The palette reads prompts and help as markup; they name dialogs by their question (a peer's
        # identity in "Disconnect <client>?"): "x[/b]" raised MarkupError, "[@click=...]" made a link.
        for name, call, help_text in self._commands():
            yield DiscoveryHit(escape(name), call, text=name, help=escape(help_text))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, call, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), call, text=name, help=escape(help_text))
