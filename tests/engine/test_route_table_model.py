"""RouteTable against a model of the kernel's routing table (review of revtrap17's routing):
random sequences of routes coming and going over a few networks, sources and kinds, after each
step what the kernel holds is what the users still counted need."""

from __future__ import annotations

import ipaddress
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.datapath.tun import BACKSTOP_METRIC, RouteTable

NETS = tuple(ipaddress.ip_network(n) for n in ("198.51.100.0/25", "198.51.100.128/25", "2001:db8::/64"))
SOURCES = {4: (None, "192.0.2.2", "192.0.2.3"), 6: (None, "2001:db8:1::2", "2001:db8:1::3")}


class Kernel:
    """One route per (network, metric) slot, whatever its type or source (IPv4 fib_table_insert
    with NLM_F_REPLACE, IPv6 fib6_add_rt2); a DELROUTE takes the slot's route when its type (and
    oif, and metric) match, whatever its source (we send none on delete). Checked against Linux
    in a namespace (IPv4 and IPv6, table 4533, a veth device)."""

    def __init__(self) -> None:
        self.slots: dict[tuple, tuple[str, str | None]] = {}
        self.sent = 0

    def route(self, add, net, *, oif=None, src=None, kind="unicast", metric=None) -> None:
        self.sent += 1
        slot = (net, metric or 0)
        if add:
            self.slots[slot] = (kind, src)
        elif slot in self.slots and (self.slots[slot][0] == kind or (net.version == 6 and kind == "throw")):
            # (IPv6's ip6_route_del matches no type: a throw's, without oif or metric, takes the
            # prefix's first route, whatever it is)
            del self.slots[slot]


def _check(kernel: Kernel, users: Counter) -> None:
    for net in NETS:
        live = {src for (n, src, kind, _), c in users.items() if n == net and kind == "unicast" and c > 0}
        held = {src for (n, src, kind, trap), c in users.items() if n == net and kind == "unicast" and c > 0
                and not trap}
        throw = any(c > 0 for (n, _, kind, _), c in users.items() if n == net and kind == "throw")
        main = kernel.slots.get((net, 0))
        if live:
            # an SA's (or a discard rule's) source while one is up, a trap's only when none is
            assert main is not None and main[0] == "unicast" and main[1] in (held or live), (net, main, live, held)
            assert kernel.slots.get((net, BACKSTOP_METRIC)) == ("blackhole", None), net
        else:
            assert kernel.slots.get((net, BACKSTOP_METRIC)) is None, net
            assert main == (("throw", None) if throw else None), (net, main)


ops = st.lists(st.tuples(st.booleans(), st.sampled_from(range(len(NETS))), st.sampled_from(range(3)),
                         st.sampled_from(("unicast", "unicast", "unicast", "throw")), st.booleans()), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_route_table_matches_the_kernels_one_route_per_network(steps):
    kernel = Kernel()
    table = RouteTable(kernel, 5)
    users: Counter = Counter()
    for add, i, s, kind, trap in steps:
        net = NETS[i]
        if kind == "throw":
            trap = False
            src = None
        else:
            src = SOURCES[net.version][s]
        key = (net, src, kind, trap)
        if add:
            table.add((net,), src, kind, trap=trap)
            users[key] += 1
        elif users[key] > 0:
            table.remove((net,), src, kind, trap=trap)
            users[key] -= 1
        elif not any(c for (n, sr, k, _), c in users.items() if (n, sr, k) == (net, src, kind)):
            table.remove((net,), src, kind, trap=trap)  # nothing counted: nothing happens
        _check(kernel, users)
    table.clear()
    assert kernel.slots == {} and table.routes() == []


def test_removing_a_route_never_added_leaves_the_networks_backstop():
    # The blackhole backstop is counted per network for every source: a remove of a (network,
    # source) that was never counted must not release it (the network's traffic would leave in
    # clear through main after a crash, the fail-closed guarantee of engine.datapath.tun).
    kernel = Kernel()
    table = RouteTable(kernel, 5)
    net = NETS[0]
    table.add((net,), None)
    table.remove((net,), "192.0.2.2")
    assert kernel.slots == {(net, 0): ("unicast", None), (net, BACKSTOP_METRIC): ("blackhole", None)}
    table.remove((net,), None)
    assert kernel.slots == {}


def test_a_bypass_rule_of_a_tunnels_network_does_not_take_its_route():
    # A reload adds a bypass rule (throw route) for a network a CHILD SA routes into the device:
    # the kernel keys routes by prefix and metric, not type, so the throw would replace the
    # tunnel's route and the packets the SPD protects (a child whose local selector is narrower
    # than the rule's catch-all comes first) would leave in clear through main. Into the device,
    # the SPD decides each packet. And removing the rule again: an IPv6 DELROUTE of the throw
    # takes whatever route the prefix has (checked in a namespace), here the tunnel's.
    for net, src in ((NETS[0], "192.0.2.2"), (NETS[2], "2001:db8:1::2")):
        kernel = Kernel()
        table = RouteTable(kernel, 5)
        table.add((net,), src)
        table.add((net,), None, "throw")
        assert kernel.slots[(net, 0)] == ("unicast", src)
        table.remove((net,), None, "throw")
        assert kernel.slots[(net, 0)] == ("unicast", src)
        table.add((net,), None, "throw")
        table.remove((net,), src)  # the tunnel goes: the bypass rule's throw route is back
        assert kernel.slots == {(net, 0): ("throw", None)}
        table.clear()
        assert kernel.slots == {}
