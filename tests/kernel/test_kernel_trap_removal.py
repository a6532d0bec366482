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
