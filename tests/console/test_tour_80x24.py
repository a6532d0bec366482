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


async def test_an_unset_choice_names_its_default(tmp_path):
    """An unset choice showed its choices only ("tunnel | transport", "none | trap | start"): which one
    the engine uses was not said."""
    from console.runtime.fake import FakeRuntime

    from .test_policies import _open

    app = make_app(FakeRuntime.in_folder(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot)
        tree = screen.query_one("#pol-tree")
        tree.cursor_line = next(n for n in range(tree.last_line + 1) if tree.get_node_at_line(n) is not None
                                and tree.get_node_at_line(n).data == ("child", "roadwarrior", "rw"))
        await wait_for(pilot, lambda: screen.query("#f-mode"), what="the CHILD SA config's form")
        mode = screen.query_one("#f-mode")
        assert mode.value == "" and mode.placeholder == "tunnel (default) | transport"


def test_the_forms_defaults_are_the_engines():
    import dataclasses

    from engine.policy import model

    from console import policy_form as pf

    owners = {id(pf.CHILD_FIELDS): model.ChildConfig, id(pf.ENGINE_FIELDS): model.EngineConfig,
              id(pf.CONNECTION_FIELDS): model.AuthConfig}
    checked = 0
    for fields in (pf.CHILD_FIELDS, pf.ENGINE_FIELDS, pf.CONNECTION_FIELDS):
        cls = owners[id(fields)]
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for field in fields:
            if field.default:
                assert defaults[field.key.split(".")[-1]] == field.default, field
                checked += 1
    assert checked >= 5  # not auth: "psk (default) | pubkey | eap-mschapv2 | ..." is cut at 80 columns
