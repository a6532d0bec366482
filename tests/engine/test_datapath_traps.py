"""engine.datapath.traps: the trap bookkeeping both datapaths share (which children the engine
asked a trap for with close_action/dpd_action = trap; what was said of traps that cannot go in)."""

from __future__ import annotations

import dataclasses
import logging

from engine.datapath.traps import AskedTraps, TrapNotes
from engine.policy.parse import parse_policy

POLICY = """
[connections.rw]
remote_addrs = ["127.0.0.2"]
local = { auth = "psk", id = "gw.example" }
remote = { auth = "psk" }

[connections.rw.children.lan]
remote_ts = ["198.51.100.128/25"]
close_action = "trap"

[connections.rw.children.dmz]
remote_ts = ["198.51.100.64/26"]
dpd_action = "trap"

[connections.rw.children.boot]
remote_ts = ["198.51.100.32/27"]
start_action = "trap"

[connections.other]
remote_addrs = ["127.0.0.3"]
local = { auth = "psk", id = "gw.example" }
remote = { auth = "psk" }

[connections.other.children.net]
remote_ts = ["198.51.100.0/27"]
close_action = "trap"
"""


def _policy(text: str = POLICY):
    return parse_policy(text, load_secrets=False)


def _child(policy, conn: str, child: str):
    c = policy.connection(conn)
    return c, c.child(child)


def test_ask_says_whether_the_request_is_new():
    asked = AskedTraps()
    assert asked.ask("rw", "lan") is True
    assert asked.ask("rw", "lan") is False  # a second close of the same child: nothing to apply
    assert ("rw", "lan") in asked and len(asked) == 1 and set(asked) == {("rw", "lan")}


def test_wants_start_action_traps_and_asked_ones_only():
    policy, asked = _policy(), AskedTraps()
    assert asked.wants(*_child(policy, "rw", "boot"))  # the policy's own trap
    assert not asked.wants(*_child(policy, "rw", "lan"))  # close_action alone: not until asked
    asked.ask("rw", "lan")
    assert asked.wants(*_child(policy, "rw", "lan"))
    assert not asked.wants(*_child(policy, "other", "net"))  # the same option, not asked


def test_drop_takes_one_connections_asked_traps_sorted():
    asked = AskedTraps()
    for key in (("rw", "lan"), ("rw", "dmz"), ("other", "net")):
        asked.ask(*key)
    assert asked.drop("rw") == ["dmz", "lan"]
    assert set(asked) == {("other", "net")}
    assert asked.drop("rw") == []  # nothing left: the datapath has nothing to apply
    assert asked.drop("boot") == []


def test_prune_keeps_children_that_still_have_a_trap_option():
    asked = AskedTraps()
    for key in (("rw", "lan"), ("rw", "dmz"), ("other", "net")):
        asked.ask(*key)
    # close_action -> dpd_action = trap: still a trap option, kept
    asked.prune(_policy(POLICY.replace('close_action = "trap"\n\n[connections.rw.children.dmz]',
                                       'dpd_action = "trap"\n\n[connections.rw.children.dmz]')))
    assert set(asked) == {("rw", "lan"), ("rw", "dmz"), ("other", "net")}
    asked.prune(_policy(POLICY.replace('dpd_action = "trap"', 'dpd_action = "restart"')))
    assert set(asked) == {("rw", "lan"), ("other", "net")}
    asked.prune(_policy(POLICY.replace("[connections.other.children.net]", "[connections.other.children.web]")))
    assert set(asked) == {("rw", "lan")}
    asked.prune(_policy())  # the options back: not asked again until the engine asks
    assert set(asked) == {("rw", "lan")}


def test_an_asked_start_action_child_is_pruned_but_still_wanted():
    # start_action = "trap" alone is no close/dpd trap option: its ask goes, the policy's trap stays
    policy, asked = _policy(), AskedTraps()
    asked.ask("rw", "boot")
    asked.prune(policy)
    assert ("rw", "boot") not in asked and asked.wants(*_child(policy, "rw", "boot"))


log = logging.getLogger("engine.datapath.test_traps")


def _round(notes: TrapNotes, *said) -> None:
    """One policy apply that finds the problems ``said`` ((conn config, child, level, text))."""
    notes.begin()
    for conn, child, level, text in said:
        notes.note(conn, child, level, text)
    notes.end()


def _logged(caplog) -> list[tuple[str, str, str]]:
    return [(r.levelname, r.getMessage(), r.connection) for r in caplog.records if r.name == log.name]


def test_a_note_is_logged_once_while_nothing_changes(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    rw = _policy().connection("rw")
    notes = TrapNotes(log)
    for _ in range(3):
        _round(notes, (rw, "lan", "warning", "trap rw/lan: no"))
    _round(notes, (rw, "lan", "warning", "trap rw/lan: no"), (rw, "dmz", "info", "trap rw/dmz: wait"))
    assert _logged(caplog) == [("WARNING", "trap rw/lan: no", "rw"), ("INFO", "trap rw/dmz: wait", "rw")]


def test_a_note_is_news_again_on_a_new_text_a_changed_connection_or_after_a_round_without_it(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    rw = _policy().connection("rw")
    notes = TrapNotes(log)
    _round(notes, (rw, "lan", "warning", "a"))
    _round(notes, (rw, "lan", "warning", "b"))  # the condition changed
    _round(notes, (_policy().connection("rw"), "lan", "warning", "b"))  # a reload, the same config
    _round(notes, (dataclasses.replace(rw, remote_addrs=("%any",)), "lan", "warning", "b"))  # a changed one
    _round(notes)  # it went in (or is no longer wanted)
    _round(notes, (dataclasses.replace(rw, remote_addrs=("%any",)), "lan", "warning", "b"))
    assert [m for _, m, _ in _logged(caplog)] == ["a", "b", "b", "b"]


def test_forget_says_everything_anew(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    rw = _policy().connection("rw")
    notes = TrapNotes(log)
    _round(notes, (rw, "lan", "error", "x"))
    notes.forget()
    _round(notes, (rw, "lan", "error", "x"))
    assert [m for _, m, _ in _logged(caplog)] == ["x", "x"]
