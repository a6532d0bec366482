"""What a person saw at 80x24 (fifteenth session's tour in tmux): the Negotiations ladder's title
cut the peer's address off ("#2 roadwarrior: us 192.0.2.1 (left) ⇄ …")."""

from __future__ import annotations

from textual.widgets import Tree

from .conftest import make_app, ready, screen_text, wait_for
from .test_negotiations import _select


async def test_the_ladder_title_names_the_peer_at_80_columns():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#ladder"), what="negotiations screen")
        for connection, peer in (("branch", "192.0.2.2"), ("partner", "192.0.2.40")):
            _select(app, connection)
            await pilot.pause(0.2)
            title = str(app.screen.query_one("#ladder", Tree).border_title)
            assert peer in title and "…" not in title, title
            assert title in screen_text(app)


async def test_the_full_ladder_title_where_there_is_room():
    app = make_app()
    async with app.run_test(size=(160, 30)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query("#ladder"), what="negotiations screen")
        _select(app, "branch")
        await pilot.pause(0.2)
        title = str(app.screen.query_one("#ladder", Tree).border_title)
        assert "(left)" in title and "peer 192.0.2.2 (right)" in title, title
