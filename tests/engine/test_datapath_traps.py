"""engine.datapath.traps: the trap bookkeeping both datapaths share (which children the engine
asked a trap for with close_action/dpd_action = trap; what was said of traps that cannot go in)."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging

from engine.datapath.traps import AskedTraps, TrapNotes, is_host, local_address, trap_child
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


def test_is_host_is_one_concrete_address():
    assert is_host("192.0.2.1") and is_host("2001:db8::1")
    for addr in ("%any", "%any6", "0.0.0.0", "::", "192.0.2.0/24", "192.0.2.1-192.0.2.9", "gw.example"):
        assert not is_host(addr), addr


def test_local_address_prefers_local_addrs_then_listen_of_the_peers_family():
    text = POLICY.replace('[connections.rw]\n', '[engine]\nlisten = ["0.0.0.0", "198.51.100.1", "2001:db8::1"]\n\n'
                          '[connections.rw]\nlocal_addrs = ["%any", "192.0.2.0/24", "192.0.2.1"]\n')
    policy = _policy(text)
    assert local_address(policy.connection("rw"), policy, 4) == "192.0.2.1"
    assert local_address(policy.connection("other"), policy, 4) == "198.51.100.1"
    assert local_address(policy.connection("other"), policy, 6) == "2001:db8::1"
    assert local_address(policy.connection("other"), _policy(), 4) is None


def test_trap_child_makes_dynamic_selectors_concrete():
    host = _policy(POLICY.replace('remote_ts = ["198.51.100.128/25"]\n', 'local_ts = ["dynamic[tcp]"]\n'))
    child = host.connection("rw").child("lan")  # local dynamic (tcp), remote dynamic
    both = trap_child(child, "127.0.0.1", "127.0.0.2", 4)
    (l,), (r,) = both.local_ts, both.remote_ts
    assert (str(l.start), str(l.end), l.protocol, l.dynamic) == ("127.0.0.1", "127.0.0.1", 6, False)
    assert (str(r.start), str(r.end), r.dynamic) == ("127.0.0.2", "127.0.0.2", False)
    # no local address known: any of the family (charon traps from %any), ports and protocol kept
    (l,) = trap_child(child, None, "2001:db8::2", 6).local_ts
    assert (l.start, l.end, l.protocol, l.dynamic) == (ipaddress.ip_address("::"),
                                                      ipaddress.ip_address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                                                      6, False)
    # the peer not known: the remote selectors stay as they are
    assert trap_child(child, "127.0.0.1", None, 4).remote_ts == child.remote_ts
    concrete = _policy().connection("other").child("net")
    assert trap_child(concrete, "127.0.0.1", None, 4).remote_ts == concrete.remote_ts
