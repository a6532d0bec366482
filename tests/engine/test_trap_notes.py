"""A trap that cannot go in (no concrete peer, a name not resolved yet, the kernel refused it) is
reported once per (connection, child), not at every policy apply, reload or trap request; again
when its condition or its connection's config changes (charon reports a failed trap install once
per attempt: src/libcharon/sa/trap_manager.c, "installing trap failed, remote address unknown").
Both datapaths say the same for the same inputs."""

from __future__ import annotations

import logging

import pytest

from engine.datapath.kernel_runtime import KernelRuntimeDatapath
from engine.datapath.kernel import KernelDatapathError
from engine.policy.parse import parse_policy

from tests.engine.test_trap_requested import FakeKernel as TrapKernel
from tests.engine.test_userspace_trap import POLICY, FakeRuntime, NamedRuntime, _transport, setup

BASE = POLICY.replace('datapath = "lab"', 'datapath = "userspace"')  # the lab keeps to literal loopback peers
CLOSE = BASE.replace('start_action = "trap"', 'close_action = "trap"')
NOWHERE = "trap rw/lan: needs a concrete remote address"


def _remote(text: str, addr: str) -> str:
    return text.replace('remote_addrs = ["127.0.0.2"]', f'remote_addrs = ["{addr}"]')


class FakeKernel(TrapKernel):
    refuse: str | None = None
    """The kernel's answer to the next trap install (None: it takes it)."""

    def install_rules(self, rules) -> None:
        pass

    def install_trap(self, reqid, child, local, remote) -> None:
        if self.refuse:
            raise KernelDatapathError(self.refuse)
        super().install_trap(reqid, child, local, remote)


def kernel(text: str, runtime=FakeRuntime) -> KernelRuntimeDatapath:
    policy = parse_policy(text, load_secrets=False)
    dp = KernelRuntimeDatapath(policy)
    dp.runtime = runtime(policy)
    dp.kernel = FakeKernel()
    dp.apply_policy(policy)
    return dp


def userspace(text: str, runtime=FakeRuntime):
    return setup(text, runtime)


DATAPATHS = {"kernel": kernel, "userspace": userspace}


def trapped(dp) -> set:
    return set(dp._traps) if isinstance(dp, KernelRuntimeDatapath) else set(dp.path.traps)


def reload(dp, text: str) -> None:
    dp.apply_policy(parse_policy(text, load_secrets=False))


def said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("engine.datapath") and r.levelno >= logging.INFO and "trap" in r.getMessage()]


@pytest.fixture
def caplog(caplog):
    caplog.set_level(logging.INFO, logger="engine")
    return caplog


@pytest.mark.parametrize("make", DATAPATHS.values(), ids=DATAPATHS.keys())
@pytest.mark.parametrize("peer", ["%any", "127.0.5.0/24", "127.0.0.3-127.0.0.9"])
def test_a_trap_without_a_concrete_peer_is_reported_once(make, peer, caplog):
    text = _remote(CLOSE, peer)
    dp = make(text)
    assert said(caplog) == []  # close_action: nothing to trap until the engine asks
    dp.trap("rw", "lan")
    assert said(caplog) == [NOWHERE] and trapped(dp) == set()
    reload(dp, text)  # the same policy again
    reload(dp, text)
    dp.peer_addresses_changed()  # another name resolved
    assert said(caplog) == [NOWHERE]
    assert [r.levelno for r in caplog.records if r.getMessage() == NOWHERE] == [logging.WARNING]


@pytest.mark.parametrize("make", DATAPATHS.values(), ids=DATAPATHS.keys())
def test_a_start_action_trap_without_a_concrete_peer_is_reported_once(make, caplog):
    text = _remote(BASE, "%any")
    dp = make(text)
    reload(dp, text)
    assert said(caplog) == [NOWHERE] and trapped(dp) == set()


@pytest.mark.parametrize("make", DATAPATHS.values(), ids=DATAPATHS.keys())
def test_reported_again_when_the_connection_changes(make, caplog):
    dp = make(_remote(BASE, "%any"))
    reload(dp, _remote(BASE, "127.0.5.0/24"))  # charon: a changed config is a new install attempt
    assert said(caplog) == [NOWHERE, NOWHERE]
    reload(dp, _remote(BASE, "127.0.5.0/24"))
    assert said(caplog) == [NOWHERE, NOWHERE]


@pytest.mark.parametrize("make", DATAPATHS.values(), ids=DATAPATHS.keys())
def test_reported_again_once_it_went_in_and_lost_its_peer_again(make, caplog):
    dp = make(_remote(BASE, "%any"))
    reload(dp, BASE)
    assert trapped(dp) == {("rw", "lan")} and said(caplog) == [NOWHERE]
    reload(dp, _remote(BASE, "%any"))
    assert trapped(dp) == set() and said(caplog) == [NOWHERE, NOWHERE]


@pytest.mark.parametrize("make", DATAPATHS.values(), ids=DATAPATHS.keys())
def test_an_asked_trap_asked_again_after_terminate_is_news(make, caplog):
    dp = make(_remote(CLOSE, "%any"))
    dp.trap("rw", "lan")
    assert dp.untrap("rw") == ["lan"]
    reload(dp, _remote(CLOSE, "%any"))  # not wanted now: nothing said
    assert said(caplog) == [NOWHERE]
    dp.trap("rw", "lan")  # the next close asks again
    assert said(caplog) == [NOWHERE, NOWHERE]


# A name not resolved yet: the kernel's trap names its tunnel endpoint, so it waits for the
# answer; the userspace datapath needs the address only in transport mode (it routes the peer).
NAMED = _remote(BASE, "gw.test")
WAITING = "trap rw/lan: waiting for gw.test to resolve"


@pytest.mark.parametrize("make", DATAPATHS.values(), ids=DATAPATHS.keys())
def test_waiting_for_a_name_is_said_once(make, caplog):
    text = _transport(NAMED)
    dp = make(text, NamedRuntime)
    reload(dp, text)
    dp.peer_addresses_changed()  # another name answered
    assert said(caplog) == [WAITING] and trapped(dp) == set()
    rt = dp.runtime
    rt.endpoint.resolved("gw.test", ("127.0.0.7",), rt.t)
    dp.peer_addresses_changed()
    assert trapped(dp) == {("rw", "lan")} and said(caplog) == [WAITING]


def test_kernel_tunnel_trap_waits_for_the_name_userspace_routes_at_once(caplog):
    # On purpose: an XFRM trap's template names the tunnel endpoint; the userspace route needs
    # only the remote selectors (the initiation its packet asks for resolves the name).
    k = kernel(NAMED, NamedRuntime)
    u = userspace(NAMED, NamedRuntime)
    assert trapped(k) == set() and trapped(u) == {("rw", "lan")}
    assert said(caplog) == [WAITING]


def test_kernel_refusing_a_trap_is_reported_once_per_reason(caplog):
    policy = parse_policy(CLOSE, load_secrets=False)
    dp = KernelRuntimeDatapath(policy)
    dp.runtime = FakeRuntime(policy)
    dp.kernel = FakeKernel()
    dp.kernel.refuse = "File exists"
    dp.apply_policy(policy)
    dp.trap("rw", "lan")
    reload(dp, CLOSE)  # each apply tries again: the same answer is no news
    reload(dp, CLOSE)
    assert said(caplog) == ["trap for rw/lan not installed: File exists"]
    dp.kernel.refuse = "No buffer space available"
    reload(dp, CLOSE)
    assert said(caplog)[1:] == ["trap for rw/lan not installed: No buffer space available"]
    dp.kernel.refuse = None
    reload(dp, CLOSE)
    assert trapped(dp) == {("rw", "lan")} and len(said(caplog)) == 2


@pytest.mark.parametrize("peer", ["127.0.0.2", "%any", "127.0.5.0/24"])
@pytest.mark.parametrize("policy", ["start", "close"])
def test_both_datapaths_trap_the_same_children_and_say_the_same(policy, peer, caplog):
    text = _remote(BASE if policy == "start" else CLOSE, peer)
    seen = {}
    for name, make in DATAPATHS.items():
        caplog.clear()
        dp = make(text)
        dp.trap("rw", "lan")
        reload(dp, text)
        after_ask = trapped(dp)
        gone = dp.untrap("rw")
        seen[name] = (after_ask, gone, trapped(dp), said(caplog))
    assert seen["kernel"] == seen["userspace"], seen


# ------------------------------------------------------------ selectors that name the peer
# A trap whose selectors are ``dynamic`` (a transport-mode child, a host-to-host tunnel without
# remote_ts, the default) protects traffic to the peer itself: the kernel's trap policy names it
# (kernel_spd.install_trap resolves ``dynamic`` to the trap's addresses, as charon's trap_manager
# does); the userspace datapath must route the peer into the device and acquire for it.

TUNNEL_HOSTS = BASE.replace('local_ts = ["198.51.100.0/25"]\nremote_ts = ["198.51.100.128/25"]\n', "")


def _to_peer(dp, addr: str = "127.0.0.2"):
    """A packet from us to the peer ``addr`` through the userspace datapath's SPD."""
    from engine.datapath.lab import udp_packet
    from tests.engine.test_userspace_trap import send

    pkt = udp_packet(bytes([127, 0, 0, 1]), bytes(map(int, addr.split("."))), 1000, 53, b"q")
    return send(dp, pkt)


def _acquired(dp) -> list:
    from engine.events import AcquireRequested

    return [dp.runtime.endpoint.registry.reqid_owner(e.reqid) for e in dp.runtime.events
            if isinstance(e, AcquireRequested)]


@pytest.mark.parametrize("text", [
    TUNNEL_HOSTS,  # a host-to-host tunnel: remote_ts dynamic by default
    _transport(BASE),
    _transport(_remote(BASE, '127.0.5.0/24", "127.0.0.2')),  # the peer initiated to, not the subnet
    _transport(BASE).replace('local_addrs = ["127.0.0.1"]\n', "").replace('listen = ["127.0.0.1"]\n', ""),
], ids=["tunnel-dynamic", "transport", "transport-subnet-first", "transport-no-local"])
def test_userspace_trap_of_the_peer_itself_acquires(text):
    dp = userspace(text)
    assert ("127.0.0.2/32",) in [r[0] for r in dp.routes.routes]
    assert _to_peer(dp) == "no_sa" and _acquired(dp) == [("rw", "lan")]


def test_userspace_transport_trap_to_a_named_peer_acquires_once_resolved():
    dp = userspace(_transport(NAMED), NamedRuntime)
    rt = dp.runtime
    rt.endpoint.resolved("gw.test", ("127.0.0.7",), rt.t)
    dp.peer_addresses_changed()
    assert _to_peer(dp, "127.0.0.7") == "no_sa" and _acquired(dp) == [("rw", "lan")]
    rt.events.clear()
    rt.t += 10  # past ACQUIRE_HOLD
    rt.endpoint.resolved("gw.test", ("127.0.0.8",), rt.t)  # DynDNS: the peer moved
    dp.peer_addresses_changed()
    assert _to_peer(dp, "127.0.0.8") == "no_sa" and _acquired(dp) == [("rw", "lan")]


@pytest.mark.parametrize("text", [TUNNEL_HOSTS, _transport(BASE), _transport(_remote(BASE, '127.0.5.0/24", "127.0.0.2'))],
                         ids=["tunnel-dynamic", "transport", "transport-subnet-first"])
def test_both_datapaths_trap_a_child_whose_selectors_name_the_peer(text):
    k, u = kernel(text), userspace(text)
    assert trapped(k) == trapped(u) == {("rw", "lan")}
    assert ("127.0.0.2/32",) in [r[0] for r in u.routes.routes]  # the kernel's trap policy names the peer
    assert _to_peer(u) == "no_sa" and _acquired(u) == [("rw", "lan")]


def test_userspace_tunnel_trap_to_a_named_peer_with_our_end_dynamic_acquires_at_once():
    # Only our end is dynamic: the route and the SPD need no answer for the peer's name.
    from engine.datapath.lab import udp_packet
    from tests.engine.test_userspace_trap import send

    dp = userspace(NAMED.replace('local_ts = ["198.51.100.0/25"]\n', ""), NamedRuntime)
    assert dp.routes.routes == [(("198.51.100.128/25",), None, "unicast")]
    pkt = udp_packet(bytes([127, 0, 0, 1]), bytes([198, 51, 100, 130]), 1000, 53, b"q")
    assert send(dp, pkt) == "no_sa" and _acquired(dp) == [("rw", "lan")]


def test_kernel_refusing_to_remove_a_trap_does_not_fail_the_reload(caplog):
    # The reload's rules are in and the datapath holds the new policy by then: raising would have
    # the runtime keep the old one beside them (and skip the traps after it).
    dp = kernel(BASE)
    (reqid,) = dp.kernel.traps

    def refuse(reqid):
        dp.kernel.traps.pop(reqid)  # what SpdTable.remove_trap forgets before the kernel answers
        raise KernelDatapathError("Operation not permitted")

    dp.kernel.remove_trap = refuse
    reload(dp, BASE.replace('start_action = "trap"', ""))
    assert trapped(dp) == set() and dp.kernel.traps == {}
    assert said(caplog) == ["trap for rw/lan not removed: Operation not permitted"]
