"""Every KeyedTable cell is drawn inert: a peer-supplied identity carrying terminal controls (ESC
sequences such as OSC 52 clipboard writes or ESC[2J; Textual 8 passes ESC through to the terminal)
shows as escapes on the dashboard's SA tables, clients, and every other keyed table, not as a
sequence the admin's terminal runs."""

from __future__ import annotations

from textual.app import App

from console.widgets.keyed_table import KeyedTable

COLUMNS = (("name", "Name", 12), ("peer", "Peer", 40))
HOSTILE = "mallory\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J"


class _App(App):
    def compose(self):
        yield KeyedTable(COLUMNS, id="t")


async def test_a_peer_identity_with_terminal_controls_is_drawn_as_escapes():
    app = _App()
    async with app.run_test(size=(70, 6)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync({"k": ("tun", HOSTILE)})
        await pilot.pause()
        drawn = "".join(s.text for y in range(2) for s in table.render_line(y))
        assert "\x1b" not in drawn and "\x07" not in drawn
        assert "mallory\\x1b]52;c;" in drawn
        table.sync({"k": ("tun", "plain.example")})  # a printable text is drawn as it is
        await pilot.pause()
        assert "plain.example" in "".join(s.text for s in table.render_line(1))
