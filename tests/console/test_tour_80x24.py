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


async def test_the_form_title_of_a_child_sa_config_is_read_in_full_at_80_columns(tmp_path):
    """The form's title ("partner / partner-net  (CHILD SA config)") was one line cut at the form's
    edge: at 80 columns "(CHILD SA confi", and a long name lost its end."""
    from console.runtime import fake_data
    from console.runtime.fake import FakeRuntime

    from .test_policies import _open

    path = fake_data.write_demo_files(tmp_path)
    text = fake_data.DEMO_POLICY_TEXT.replace("[connections.roadwarrior.children.rw]",
                                              "[connections.roadwarrior.children.hq-roadwarrior-eu]")
    (tmp_path / "gateway.toml").write_text(text)
    app = make_app(FakeRuntime(policy=fake_data.demo_policy(path), policy_text=text))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        tree = screen.query_one("#pol-tree")
        children = [n for n in range(tree.last_line + 1) if tree.get_node_at_line(n) is not None
                    and (tree.get_node_at_line(n).data or ("",))[0] == "child"]
        line = max(children, key=lambda n: len(" / ".join(tree.get_node_at_line(n).data[1:])))
        tree.cursor_line = line
        node = tree.get_node_at_line(line).data
        await wait_for(pilot, lambda: screen._form_node == node and screen.query(".form-title"), what="the form")
        await pilot.pause(0.2)
        r = screen.query_one("#pol-form").region
        rows = screen_text(app).splitlines()[r.y:r.y + r.height]
        form = " ".join(" ".join(row[r.x:r.x + r.width] for row in rows).split())
        assert f"{' / '.join(node[1:])} (CHILD SA config)" in form, form
