"""The policy form edits close_action beside dpd_action, with the parser's choices."""

from console.policy_form import fields_for


def test_child_form_has_close_action_after_dpd_action():
    keys = [f.key for f in fields_for(("child", "tun", "lan"))]
    assert keys.index("close_action") == keys.index("dpd_action") + 1
    (field,) = [f for f in fields_for(("child", "tun", "lan")) if f.key == "close_action"]
    assert (field.kind, field.choices) == ("choice", ("none", "trap", "start"))
