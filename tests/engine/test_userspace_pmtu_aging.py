"""Path MTUs the userspace datapath learned smaller are asked again (RFC 1191 §6.3, RFC 8201 §4):
the SAs' inner limit and the route MTU that transport-mode outer fragments are cut to both grow
back with the path. Time is passed in; `pmtu.probe` is the kernel's answer, stubbed."""

from __future__ import annotations

import pytest

from engine.datapath import pmtu
from engine.datapath.userspace import UserspaceDatapath
from engine.datapath.userspace_io import RawSender
from engine.policy.parse import parse_policy
from tests.engine.test_transport_fragments import POLICY


def _Pair():
    """A tunnel-mode ESP pair (the kind sized to the path)."""
    from tests.engine.test_userspace_fragment_steering import _path
    return next(iter(_path(other=False)[0].pairs.values()))


@pytest.fixture
def dp():
    d = UserspaceDatapath(parse_policy(POLICY, load_secrets=False))  # TUN MTU 1400, not started
    return d


@pytest.fixture
def kernel(monkeypatch):
    """The path MTU the kernel reports: set ``kernel.mtu``; ``kernel.asked`` counts the questions."""
    class K:
        mtu = 1500
        asked = 0
    k = K()

    def probe(remote, port, mark):
        k.asked += 1
        return k.mtu
    monkeypatch.setattr(pmtu, "probe", probe)
    return k


def _sender():
    s = RawSender(None, lambda data, dest: None, ("192.0.2.2", 0))
    return s


def test_a_route_mtu_that_shrank_on_emsgsize_grows_back(dp, kernel):
    # main: sender.mtu, asked again only when a send failed with EMSGSIZE, stayed at 1200 for good:
    # every reassembled transport-mode datagram kept leaving in 1200-byte outer fragments.
    s = _sender()
    kernel.mtu = 1200
    assert dp.route_mtu(s) == 1200
    kernel.mtu = 9000  # the path grew back (the kernel forgot the ICMP after mtu_expires)
    dp._reprobe(pmtu.REPROBE - 1)
    assert s.mtu == 1200  # not yet
    dp._reprobe(pmtu.REPROBE)
    assert s.mtu == 9000 and s not in dp._reduced and s.pmtu == 0
    kernel.asked = 0
    dp._reprobe(10 * pmtu.REPROBE)
    assert kernel.asked == 0  # nothing limited: nothing asked


def test_a_learned_pmtu_grows_back_step_by_step(dp, kernel):
    s = _sender()
    pair = _Pair()
    s.pairs.add(pair)
    kernel.mtu = 1200
    dp.route_mtu(s)
    dp._size_pairs(s, 1200, 0.0)
    assert s.pmtu == 1200
    kernel.mtu = 1450  # larger, still below what the device's packets need after ESP
    dp._reprobe(pmtu.REPROBE)
    assert (s.pmtu, s.mtu, s.pmtu_at) == (1450, 1450, pmtu.REPROBE) and s in dp._reduced
    assert pair.max_inner == pmtu.inner_limit(1450, pair.outbound, False) > pmtu.inner_limit(1200, pair.outbound, False)
    kernel.mtu = 1600  # every packet of the 1400-byte device fits after ESP: no limit any more
    dp._reprobe(2 * pmtu.REPROBE)
    assert (s.pmtu, s.mtu, pair.max_inner) == (0, 1600, 0) and s not in dp._reduced


def test_an_unknown_answer_lifts_the_limit(dp, kernel):
    s = _sender()
    pair = _Pair()
    pair.max_inner = 1100
    s.pairs.add(pair)
    dp._size_pairs(s, 1200, 0.0)
    s.mtu = 1200
    kernel.mtu = None
    dp._reprobe(pmtu.REPROBE)
    assert (s.pmtu, s.mtu, pair.max_inner) == (0, 0, 0) and s not in dp._reduced
