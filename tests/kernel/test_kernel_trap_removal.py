"""A trap the kernel will not fully remove (review of trap17): KernelRuntimeDatapath reports the
error and goes on (the reload's rules are in), so SpdTable.remove_trap must not leave the trap's
other policies behind: each is released, and the first refusal is raised after (charon's
kernel_netlink del_policy logs a failed delete and goes on with the next policy)."""

from __future__ import annotations

import errno

import pytest

from engine.datapath.kernel import KernelDatapath, KernelDatapathError
from engine.policy.model import ChildConfig
from engine.policy.parse import parse_ts

from .test_kernel_move import _installed, fake  # noqa: F401  (fake: the fixture)

TRAP = ChildConfig("net", local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.129"),))


def test_a_refused_policy_does_not_keep_the_traps_other_policies(fake):
    dp = KernelDatapath()
    dp.install_trap(2, TRAP, "192.0.2.1", "192.0.2.2")
    n = len(dp._policies)  # out, in, fwd (and its fwd out)
    real, asked = dp._delete_policy, []

    def refuse_the_first(spec, what):
        asked.append(spec.dir)
        if len(asked) == 1:
            raise KernelDatapathError(f"{what}: DELPOLICY: Operation not permitted", errno.EPERM)
        real(spec, what)

    dp._delete_policy = refuse_the_first
    with pytest.raises(KernelDatapathError, match="Operation not permitted"):
        dp.remove_trap(2)
    assert len(asked) == n and dp._policies == {} and dp._traps == {}
    # the selectors are free: a CHILD SA of another reqid is not refused as a conflict with the trap
    dp.install_child(_installed(reqid=9))
    assert len(dp._policies) == n


# A trap that changes (its peer's name resolves elsewhere, a reload touches its child) goes in
# before the old one goes, as charon's trap_manager install does ("updating already routed
# CHILD_SA": the new CHILD_SA's policies first, then the old entry destroyed): removing first
# leaves a moment with no policy, when the tunnel's traffic leaves in clear.
def test_replacing_a_trap_updates_its_policies_in_place(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_trap(2, TRAP, "192.0.2.1", "192.0.2.2")
    keys = set(dp._policies)
    nl.log.clear()
    dp.install_trap(2, TRAP, "192.0.2.1", "192.0.2.9", replace=True)  # the peer moved
    assert set(dp._policies) == keys and nl.log and set(nl.log) == {"UPDPOLICY"}, nl.log
    assert all(len(e.holders) == 1 for e in dp._policies.values())
    wider = ChildConfig("net", local_ts=(parse_ts("198.51.100.1"),), remote_ts=(parse_ts("198.51.100.128/25"),))
    dp.install_trap(2, wider, "192.0.2.1", "192.0.2.9", replace=True)  # new selectors: the old ones go after
    assert len(dp._policies) == len(keys) and set(dp._policies) != keys
    dp.remove_trap(2)
    assert dp._policies == {}


def test_a_refused_replacement_leaves_the_old_trap_in_force(fake):
    dp = KernelDatapath()
    nl = fake[0]
    dp.install_trap(2, TRAP, "192.0.2.1", "192.0.2.2")
    before = {k: e.spec for k, e in dp._policies.items()}
    traps = dict(dp._traps)
    real = dp._update_policy

    def refuse_the_second(spec, what, _n=[0]):
        _n[0] += 1
        if _n[0] == 2:
            raise KernelDatapathError("refused", errno.ENOBUFS)
        real(spec, what)

    dp._update_policy = refuse_the_second
    with pytest.raises(KernelDatapathError):
        dp.install_trap(2, TRAP, "192.0.2.1", "192.0.2.9", replace=True)
    assert {k: e.spec for k, e in dp._policies.items()} == before and dp._traps == traps
