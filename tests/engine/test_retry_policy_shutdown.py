"""A failed connection's pending keyingtries attempt (endpoint `_retries`) against policy changes and
shutdown: an attempt outlives neither its connection's removal or change, nor a shutdown."""

from __future__ import annotations

import dataclasses

from tests.engine.ike_pair import child, policy
from tests.engine.test_terminate_retry import GOOD, failed_pair, inits_sent


def test_a_shutdown_drops_the_pending_attempt():
    """The runtime keeps the timers running for SHUTDOWN_GRACE while Deletes are answered: an attempt
    due then started a new IKE SA in a gateway that was stopping."""
    p = failed_pair()
    p.a.shutdown(p.now)
    assert p.a.retrying("tun") is None
    p.advance(10)
    assert inits_sent(p) == 1 and not list(p.a.sas)


def test_removing_or_renaming_the_connection_drops_its_attempt():
    p = failed_pair()
    p.a.apply_policy(policy(dataclasses.replace(GOOD, name="tun2")), p.now)
    assert p.a.retrying("tun") is None
    p.advance(120)
    assert inits_sent(p) == 1 and "tun" not in {c.name for c in p.a.policy.connections}


def test_a_changed_connection_that_starts_is_initiated_once():
    """Changed: its SAs go and, with start_action = start, it comes up at once; the old attempt must
    not start a second IKE SA a few seconds later."""
    p = failed_pair()
    changed = dataclasses.replace(GOOD, children=(child(start_action="start"),))
    p.a.apply_policy(policy(changed), p.now)
    assert p.a.retrying("tun") is None
    p.deliver()
    assert inits_sent(p) == 2  # the one start_action = start made, refused again
    before = p.a.retrying("tun")
    assert before is not None  # that one failed: its own attempt is pending
    p.advance(before - p.now - 0.01)
    assert inits_sent(p) == 2


def test_terminate_cancels_an_initiation_waiting_for_its_host_name():
    """An initiation (the admin's, or a keyingtries attempt) to a host name waits for the resolver;
    terminate said nothing was up, and when the answer came the connection was started anyway."""
    from tests.engine.test_ike_names import GW, established, pair

    p, _ = pair()
    assert p.a.initiate("tun", p.now) is None  # waiting for GW
    assert p.a.terminate("tun", p.now) == 0
    p.a.resolved(GW, ("192.0.2.2",), p.now)
    p.advance(2)
    assert not p.a.sas and not established(p.b)
    # A new initiation after the terminate is not lost with the cancelled one.
    p2, _ = pair()
    p2.a.initiate("tun", p2.now)
    p2.a.terminate("tun", p2.now)
    p2.a.initiate("tun", p2.now)
    p2.a.resolved(GW, ("192.0.2.2",), p2.now)
    p2.advance(2)
    assert len(established(p2.a)) == 1
