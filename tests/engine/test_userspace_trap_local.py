"""listen17: the userspace datapath's trap takes our address by the rule IKE initiates from
(engine.ike.addresses.local_for, with local_addrs' resolved names, the sockets the runtime bound and
the route's source), as the kernel's trap does (engine.datapath.traps.trap_local): a trap IKE
would refuse to initiate for does not go in, on either datapath."""

from __future__ import annotations

import logging

import pytest

from engine.ike.errors import LocalError

from tests.engine.test_local_address_review import _routed_runtime, _trap_text
from tests.engine.test_trap_notes import kernel, said, trapped, userspace

CASES = [  # local_addrs, listen, the route's source towards 127.0.0.2, what the daemon bound, a name's answer
    (("me.test",), (), "127.0.0.1", (), ("127.0.0.1",)),  # a local name resolved: its address
    ((), (), "127.0.0.9", ("127.0.0.3",), None),  # without listen: a socket the daemon has
    (("127.0.0.0/24",), (), "127.0.0.1", (), None),  # the route's source, inside local_addrs
    (("127.0.5.0/24",), (), "127.0.0.1", (), None),  # ... outside: IKE refuses
    (("127.0.5.0/24",), ("127.0.0.1",), "127.0.0.1", (), None),  # listen outside local_addrs: refuses
    (("127.0.0.1",), (), "127.0.0.1", (), None),
]


def _runtime(source, bound, answer):
    class Runtime(_routed_runtime(source)):
        def __init__(self, policy) -> None:
            super().__init__(policy)
            self.endpoint.listening = bound
            if answer is not None:
                self.endpoint.resolved("me.test", answer, self.t)

    return Runtime


def _ike(dp) -> str | None:
    ep = dp.runtime.endpoint
    try:
        return ep.local_address(ep.policy.connection("rw"), "127.0.0.2")
    except LocalError:
        return None


def _userspace_local(dp) -> str | None:
    """The trap's local end in the userspace SPD (None: no trap)."""
    if ("rw", "lan") not in dp.path.traps:
        return None
    (lan,) = dp.path.policy.connection("rw").children
    (ts,) = lan.local_ts
    assert not ts.dynamic and ts.start == ts.end, ts  # concrete, one address
    return str(ts.start)


@pytest.mark.parametrize("local_addrs, listen, source, bound, answer", CASES)
def test_both_datapaths_trap_from_the_address_ike_initiates_from_or_not_at_all(local_addrs, listen, source,
                                                                               bound, answer, caplog):
    caplog.set_level(logging.INFO, logger="engine")
    text = _trap_text(local_addrs, listen)
    k = kernel(text, _runtime(source, bound, answer))
    u = userspace(text, _runtime(source, bound, answer))
    ike = _ike(k)
    assert _ike(u) == ike
    assert list(k.kernel.traps.values()) == ([("lan", ike, "127.0.0.2")] if ike else [])
    assert _userspace_local(u) == ike
    if ike is None:
        refusals = [s for s in said(caplog) if "not installed" in s]
        assert len(refusals) == 2 and refusals[0] == refusals[1], refusals  # the same words from both


def test_a_userspace_trap_waits_for_a_local_host_name_then_goes_in_from_what_it_holds(caplog):
    # as the kernel's (test_local_address_review): at start no name is answered yet, a wait
    caplog.set_level(logging.INFO, logger="engine")
    dp = userspace(_trap_text(("me.test",), ()), _routed_runtime("127.0.0.1"))
    assert _userspace_local(dp) is None
    assert said(caplog) == ["trap rw/lan: waiting for me.test to resolve"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    rt = dp.runtime
    rt.endpoint.resolved("me.test", ("127.0.0.1",), rt.t)
    dp.peer_addresses_changed()
    assert _userspace_local(dp) == "127.0.0.1"


@pytest.mark.parametrize("make", [kernel, userspace], ids=["kernel", "userspace"])
def test_a_trap_to_a_peer_of_a_family_the_daemon_could_not_open_says_why(make, caplog):
    # (engine.runtime.listening: no [engine] listen, no IPv6 on this host) the trap's refusal is IKE's
    class NoIpv6(_routed_runtime("::1")):
        def __init__(self, policy) -> None:
            super().__init__(policy)
            self.endpoint.listening = ("0.0.0.0",)
            self.endpoint.unopened = {6: "Address family not supported by protocol"}

    caplog.set_level(logging.INFO, logger="engine")
    text = _trap_text((), ()).replace('remote_addrs = ["127.0.0.2"]', 'remote_addrs = ["::2"]')
    dp = make(text, NoIpv6)
    (refusal,) = [s for s in said(caplog) if "not installed" in s]
    assert ":: could not be opened at start (Address family not supported" in refusal, refusal


@pytest.mark.parametrize("make", [kernel, userspace], ids=["kernel", "userspace"])
def test_a_trap_from_a_literal_address_of_a_family_the_daemon_could_not_open_is_refused(make, caplog):
    class NoIpv6(_routed_runtime("::1")):
        def __init__(self, policy) -> None:
            super().__init__(policy)
            self.endpoint.listening = ("0.0.0.0",)
            self.endpoint.unopened = {6: "Address family not supported by protocol"}

    caplog.set_level(logging.INFO, logger="engine")
    text = _trap_text(("::1",), ()).replace('remote_addrs = ["127.0.0.2"]', 'remote_addrs = ["::2"]')
    dp = make(text, NoIpv6)
    assert trapped(dp) == set()
    (refusal,) = [s for s in said(caplog) if "not installed" in s]
    assert ":: could not be opened at start" in refusal, refusal
