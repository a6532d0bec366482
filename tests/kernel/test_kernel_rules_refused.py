"""Bypass/discard rules the kernel refuses (review item): apply_policy logged "bypass/discard rules not
applied" and went on, so the runtime switched to a policy whose discard rules were not in force while
reload, the control socket and the console all said it was applied. Now the whole policy is refused
with the kernel's message (the runtime keeps its old policy, as for any step that would fail), and
the kernel is left exactly as before: the rules' policies added before the refusal are removed, the
ones changed in place are put back (against a fake NETLINK_XFRM that keeps policies as the kernel)."""

from __future__ import annotations

import errno
import logging
from types import SimpleNamespace

import pytest

from engine.datapath import kernel as kernel_mod
from engine.datapath.kernel import KernelDatapath
from engine.datapath.kernel_runtime import KernelRuntimeDatapath
from engine.datapath.kernel_socket import NLM_F_EXCL, NetlinkRequestError
from engine.datapath.xfrm_netlink import (
    MSG_NAMES,
    XFRM_MSG_DELPOLICY,
    XFRM_MSG_GETPOLICY,
    XFRM_MSG_NEWPOLICY,
    XFRM_MSG_UPDPOLICY,
)
from engine.ike.errors import LocalError, PlanRefused
from engine.policy.model import Policy, RuleConfig
from engine.policy.ts import parse_ts

from .test_kernel_move import FakeXfrm, _decode


class FakeSpd(FakeXfrm):
    """FakeXfrm with policies looked up and deleted as the kernel does; ``refuse`` names the nth
    NEWPOLICY/UPDPOLICY from now on that the kernel refuses (EINVAL, with a message)."""

    def __init__(self, netns=None, groups=0) -> None:
        super().__init__(netns, groups)
        self.refuse: int | None = None
        self._index = 0

    def request(self, msg, msg_type, flags=0):
        if msg_type not in (XFRM_MSG_NEWPOLICY, XFRM_MSG_UPDPOLICY, XFRM_MSG_GETPOLICY, XFRM_MSG_DELPOLICY):
            return super().request(msg, msg_type, flags)
        req = _decode(msg, msg_type).msg
        self.log.append(MSG_NAMES[msg_type])
        if msg_type == XFRM_MSG_DELPOLICY:
            for key, stored in list(self.policies.items()):
                if stored["index"] == req["index"] and key[0] == req["dir"]:
                    del self.policies[key]
                    return []
            raise NetlinkRequestError(errno.ENOENT, "DELPOLICY", "")
        key = (req["dir"], tuple(sorted(req["sel"].items())))
        if msg_type == XFRM_MSG_GETPOLICY:
            if key not in self.policies:
                raise NetlinkRequestError(errno.ENOENT, "GETPOLICY", "")
            return [SimpleNamespace(msg=self.policies[key])]
        if self.refuse is not None:
            self.refuse -= 1
            if self.refuse == 0:
                self.refuse = None
                raise NetlinkRequestError(errno.EINVAL, MSG_NAMES[msg_type], "policy refused by the test")
        if msg_type == XFRM_MSG_NEWPOLICY and flags & NLM_F_EXCL and key in self.policies:
            raise NetlinkRequestError(errno.EEXIST, "NEWPOLICY", "")
        self._index += 8
        req["index"] = self.policies[key]["index"] if key in self.policies else self._index
        self.policies[key] = req
        return []


@pytest.fixture
def spd(monkeypatch):
    sockets = []

    def make(netns=None, groups=0):
        sockets.append(FakeSpd(netns, groups))
        return sockets[-1]

    monkeypatch.setattr(kernel_mod, "XfrmSocket", make)
    return sockets


def _policy(*rules: RuleConfig) -> Policy:
    return Policy(rules=tuple(rules))


def _snapshot(nl) -> dict:
    return {k: (v["priority"], v["action"]) for k, v in nl.policies.items()}


DNS = RuleConfig("dns", "bypass", remote_ts=(parse_ts("0.0.0.0/0[udp/53]"),))
BLOCK = RuleConfig("block", "discard", remote_ts=(parse_ts("198.51.100.0/24"),))
WEB = RuleConfig("web", "discard", remote_ts=(parse_ts("198.51.100.7/32[tcp/443]"),))


def _datapath(spd) -> tuple[KernelRuntimeDatapath, FakeSpd]:
    dp = KernelRuntimeDatapath(Policy())
    dp.kernel = KernelDatapath()
    dp._enable_udp_encap = lambda: None
    return dp, spd[0]


@pytest.mark.parametrize("nth", range(1, 8))
def test_rules_the_kernel_refuses_refuse_the_policy_and_leave_the_kernel_as_it_was(spd, nth):
    dp, nl = _datapath(spd)
    first = _policy(DNS, BLOCK)
    dp.apply_policy(first)
    before = _snapshot(nl)
    assert before
    # The new policy keeps dns, changes block's priority (updated in place) and adds web.
    changed = RuleConfig("block", "discard", remote_ts=BLOCK.remote_ts, priority=7)
    nl.refuse = nth
    with pytest.raises(PlanRefused, match="the kernel refused the bypass/discard rules: .*policy refused by the test"):
        dp.apply_policy(_policy(DNS, changed, WEB))
    assert _snapshot(nl) == before
    assert dp.policy is first
    # Once the kernel takes it, the same policy applies whole.
    dp.apply_policy(_policy(DNS, changed, WEB))
    assert len(nl.policies) > len(before) and _snapshot(nl) != before and dp.policy.rules[2].name == "web"


def test_the_refusal_reaches_reload_and_the_control_socket_as_nothing_changed(spd):
    """PlanRefused is a LocalError (the control socket's readable error) and a ValueError (reload's
    "...; nothing was changed"): not an internal error with a traceback."""
    dp, nl = _datapath(spd)
    dp.apply_policy(_policy(DNS))
    nl.refuse = 1
    with pytest.raises(LocalError) as caught:
        dp.apply_policy(_policy(DNS, WEB))
    assert isinstance(caught.value, ValueError)
    assert "rule 'web'" in str(caught.value)


def test_a_dropped_rule_whose_policy_the_kernel_keeps_is_logged_and_the_new_set_stands(spd, caplog):
    dp, nl = _datapath(spd)
    dp.apply_policy(_policy(DNS, WEB))
    real = nl.request

    def no_delete(msg, msg_type, flags=0):
        if msg_type == XFRM_MSG_DELPOLICY:
            raise NetlinkRequestError(errno.EPERM, "DELPOLICY", "not today")
        return real(msg, msg_type, flags)

    nl.request = no_delete
    new = _policy(DNS)
    with caplog.at_level(logging.ERROR):
        dp.apply_policy(new)
    assert dp.policy is new
    assert "rule 'web' removed, but its kernel policy stays" in caplog.text


POLICY = """
[connections.gw]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
local = {{ auth = "psk", id = "a.example" }}
remote = {{ auth = "psk", id = "b.example" }}
[connections.gw.children.net]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/25"]
esp_proposals = ["{esp}"]
replay_window = {window}
"""


@pytest.mark.parametrize("esp", ["aes256gcm16-esn", "aes256gcm16-noesn-esn", "aes256gcm16-esn-noesn"])
def test_esn_without_a_replay_window_is_refused_naming_the_child(spd, esp):
    """Linux refuses an inbound ESN SA with replay window 0 (EINVAL; charon's as well): every CHILD SA
    that negotiates ESN would fail with the kernel's bare message. Refused up front, naming it."""
    from engine.policy.parse import parse_policy

    dp, nl = _datapath(spd)
    with pytest.raises(PlanRefused, match="connection 'gw': child 'net' has replay_window = 0 and offers ESN"):
        dp.apply_policy(parse_policy(POLICY.format(esp=esp, window=0), load_secrets=False))
    assert nl.policies == {}
    dp.apply_policy(parse_policy(POLICY.format(esp=esp, window=1), load_secrets=False))
    dp.apply_policy(parse_policy(POLICY.format(esp="aes256gcm16-noesn", window=0), load_secrets=False))
