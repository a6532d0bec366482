"""TrapRequested (close_action/dpd_action = trap): the runtime hands it to the datapath, which
traps that child as it does ``start_action = "trap"`` children, until the policy drops it."""

from __future__ import annotations

from engine.datapath.kernel_runtime import KernelRuntimeDatapath
from engine.events import AcquireRequested, TrapRequested
from engine.policy.parse import parse_policy
from engine.runtime.engine import EngineRuntime

from tests.engine.test_userspace_trap import POLICY, packet, send, setup

PLAIN = POLICY.replace('start_action = "trap"', 'close_action = "trap"')


def test_userspace_traps_a_child_the_engine_asks_for():
    dp = setup(PLAIN)
    rt = dp.runtime
    assert dp.routes.routes == [] and send(dp, packet()) == "no_sa" and not rt.events
    dp.trap("rw", "lan")
    assert dp.routes.routes == [(("198.51.100.128/25",), None, "unicast")]
    send(dp, packet())
    (ev,) = rt.events
    assert isinstance(ev, AcquireRequested) and rt.endpoint.registry.reqid_owner(ev.reqid) == ("rw", "lan")
    dp.apply_policy(parse_policy(PLAIN, load_secrets=False))  # a reload keeps it
    assert dp.routes.routes == [(("198.51.100.128/25",), None, "unicast")]
    dp.apply_policy(parse_policy(PLAIN.replace("children.lan", "children.other"), load_secrets=False))
    assert dp.routes.routes == []
    dp.apply_policy(parse_policy(PLAIN, load_secrets=False))  # back in the policy: not trapped again
    assert dp.routes.routes == []


class FakeKernel:
    def __init__(self) -> None:
        self.traps: dict[int, tuple] = {}

    def install_trap(self, reqid, child, local, remote) -> None:
        self.traps[reqid] = (child.name, local, remote)

    def remove_trap(self, reqid) -> None:
        del self.traps[reqid]


def test_kernel_traps_a_child_the_engine_asks_for():
    policy = parse_policy(PLAIN, load_secrets=False)
    dp = KernelRuntimeDatapath(policy)
    dp.runtime = setup(PLAIN).runtime  # its endpoint names the reqid
    dp.kernel = FakeKernel()
    dp._apply_traps()
    assert dp.kernel.traps == {}
    dp.trap("rw", "lan")
    reqid = dp.runtime.endpoint.reqid_for_config("rw", "lan")
    assert dp.kernel.traps == {reqid: ("lan", "127.0.0.1", "127.0.0.2")}
    dp.policy = parse_policy(PLAIN.replace("children.lan", "children.other"), load_secrets=False)
    dp._apply_traps()
    assert dp.kernel.traps == {}


def test_the_runtime_hands_the_request_to_the_datapath():
    asked = []

    class Datapath:
        def trap(self, connection, child):
            asked.append((connection, child))

    rt = EngineRuntime(parse_policy(PLAIN, load_secrets=False), datapath=Datapath())
    rt._dispatch(TrapRequested("rw", "lan", "close_action"))
    assert asked == [("rw", "lan")]


def test_list_conns_shows_close_action_beside_dpd_action():
    from console.cli_control import format_conns
    from engine.jsonable import to_jsonable

    rt = EngineRuntime(parse_policy(PLAIN, load_secrets=False))
    (info,) = rt.connections()
    assert (info.children[0].dpd_action, info.children[0].close_action) == ("clear", "trap")
    assert "dpd_action clear, close_action trap" in format_conns([to_jsonable(info)])


def test_userspace_admin_terminate_removes_the_asked_trap():
    # A trap close_action/dpd_action asked for is not in the policy: the admin's terminate is the
    # only way to take it down, or the next packet brings the tunnel back behind their back.
    dp = setup(PLAIN)
    dp.trap("rw", "lan")
    send(dp, packet())  # a flow that acquires
    dp.runtime.events.clear()
    assert dp.untrap("rw") == ["lan"]
    assert dp.routes.routes == []
    assert send(dp, packet()) == "no_sa" and not dp.runtime.events
    dp.apply_policy(parse_policy(PLAIN, load_secrets=False))  # not back on a reload either
    assert dp.routes.routes == []
    dp.trap("rw", "lan")  # asked again later (the next close)
    assert dp.routes.routes == [(("198.51.100.128/25",), None, "unicast")]


def test_userspace_untrap_keeps_a_start_action_trap():
    dp = setup(POLICY)
    assert dp.untrap("rw") == []
    assert dp.routes.routes == [(("198.51.100.128/25",), None, "unicast")]


def test_kernel_admin_terminate_removes_the_asked_trap():
    policy = parse_policy(PLAIN, load_secrets=False)
    dp = KernelRuntimeDatapath(policy)
    dp.runtime = setup(PLAIN).runtime
    dp.kernel = FakeKernel()
    dp.trap("rw", "lan")
    assert dp.kernel.traps
    assert dp.untrap("rw") == ["lan"]
    assert dp.kernel.traps == {}
    dp._apply_traps()
    assert dp.kernel.traps == {}


def test_the_runtime_terminate_drops_the_connections_asked_traps():
    dropped = []

    class Datapath:
        def trap(self, connection, child):
            pass

        def untrap(self, connection):
            dropped.append(connection)
            return ["lan"]

    rt = EngineRuntime(parse_policy(PLAIN, load_secrets=False), datapath=Datapath())
    rt._dispatch(TrapRequested("rw", "lan", "dpd_action"))
    done = rt.terminate("rw")  # no IKE SA up (the peer was gone): the trap still goes
    assert dropped == ["rw"]
    assert done.deleted == 0 and done.untrapped == ("lan",)  # said so, not "no IKE SA to terminate"


def test_userspace_asked_trap_goes_when_the_policy_no_longer_asks_for_it():
    dp = setup(PLAIN)
    dp.trap("rw", "lan")
    dp.apply_policy(parse_policy(PLAIN.replace('close_action = "trap"', 'dpd_action = "trap"'), load_secrets=False))
    assert dp.routes.routes == [(("198.51.100.128/25",), None, "unicast")]  # still a trap option
    dp.apply_policy(parse_policy(PLAIN.replace('close_action = "trap"', 'close_action = "start"'),
                                 load_secrets=False))
    assert dp.routes.routes == []


def test_kernel_asked_trap_goes_when_the_policy_no_longer_asks_for_it():
    dp = KernelRuntimeDatapath(parse_policy(PLAIN, load_secrets=False))
    dp.runtime = setup(PLAIN).runtime
    dp.kernel = FakeKernel()
    dp.trap("rw", "lan")
    assert dp.kernel.traps
    dp.policy = parse_policy(PLAIN.replace('close_action = "trap"', ""), load_secrets=False)
    dp._apply_traps()
    assert dp.kernel.traps == {}
