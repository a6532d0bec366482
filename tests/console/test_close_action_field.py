"""The policy form edits close_action beside dpd_action, with the parser's choices."""

from console.policy_form import fields_for


def test_child_form_has_close_action_after_dpd_action():
    keys = [f.key for f in fields_for(("child", "tun", "lan"))]
    assert keys.index("close_action") == keys.index("dpd_action") + 1
    (field,) = [f for f in fields_for(("child", "tun", "lan")) if f.key == "close_action"]
    assert (field.kind, field.choices) == ("choice", ("none", "trap", "start"))


def test_the_fake_runtime_lists_close_action_too():
    import dataclasses

    from console.runtime.fake import FakeRuntime

    from console.runtime import fake_data

    demo = fake_data.demo_policy()
    conn = demo.connections[0]
    kid = dataclasses.replace(conn.children[0], close_action="start")
    rt = FakeRuntime(policy=dataclasses.replace(demo, connections=(dataclasses.replace(conn, children=(kid,)),)))
    info = next(i for i in rt._connection_infos() if i.name == conn.name)
    assert info.children[0].close_action == "start"
