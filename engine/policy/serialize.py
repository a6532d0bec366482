"""Policy -> TOML text (tomli-w), the inverse of :func:`engine.policy.parse.parse_policy`.

Only values that differ from what the parser would assume are written, so a
form edit produces a short file an admin can still read. Secrets are never
written: the policy names its secrets file, nothing more. Comments of a
hand-written file are lost (the console warns before re-serializing one).
"""

from __future__ import annotations

from typing import Any

import tomli_w

from engine.policy._reader import format_duration, format_size
from engine.policy.identity import format_identity
from engine.policy.model import (
    AuthConfig,
    ChildConfig,
    ConnectionConfig,
    EngineConfig,
    LabConfig,
    Policy,
    PoolConfig,
    Proposal,
    RuleConfig,
)
from engine.policy.parse import (
    child_life_count,
    child_life_time,
    default_ts,
    ike_over_time,
)
from engine.policy.proposals import default_proposals, proposal_texts

HEADER = "# Written by ipsec-console: comments are not kept when a form saves this file.\n\n"


def _engine(e: EngineConfig) -> dict[str, Any]:
    d = EngineConfig()
    out: dict[str, Any] = {"datapath": e.datapath}
    if e.listen:
        out["listen"] = list(e.listen)
    for key in ("ike_port", "natt_port", "secrets", "control", "retransmit_base", "retransmit_tries",
                "half_open_threshold"):
        value = getattr(e, key)
        if value != getattr(d, key) and value is not None:
            out[key] = value
    for key in ("retransmit_timeout", "keepalive"):
        if getattr(e, key) != getattr(d, key):
            out[key] = format_duration(getattr(e, key))
    if e.crls:
        out["crls"] = list(e.crls)
    if e.pki_dir:
        out["pki"] = e.pki_dir
    for key in ("tun_device", "tun_mtu", "tun_offload"):
        if getattr(e, key) != getattr(d, key):
            out[key] = getattr(e, key)
    return out


def _lab(lab: LabConfig) -> dict[str, Any]:
    d = LabConfig()
    out: dict[str, Any] = {"peers": list(lab.peers)}
    if lab.rate != d.rate:
        out["rate"] = lab.rate
    if lab.flows != d.flows:
        out["flows"] = list(lab.flows)
    return out


def _proposals(out: dict[str, Any], key: str, proposals: tuple[Proposal, ...], protocol: str) -> None:
    if proposals and proposals != default_proposals(protocol):  # type: ignore[arg-type]
        out[key] = proposal_texts(proposals)


def _auth(a: AuthConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"auth": a.auth}
    if a.id is not None:
        out["id"] = format_identity(a.id)
    if a.certs:
        out["certs"] = list(a.certs)
    if a.cacerts:
        out["cacerts"] = list(a.cacerts)
    if a.eap_id is not None:
        out["eap_id"] = a.eap_id
    return out


def _child(c: ChildConfig) -> dict[str, Any]:
    d = ChildConfig(name=c.name)
    out: dict[str, Any] = {}
    if c.mode != d.mode:
        out["mode"] = c.mode
    if c.protocol != "esp":
        out["protocol"] = c.protocol
    for key in ("local_ts", "remote_ts"):
        if getattr(c, key) != getattr(d, key):
            out[key] = [str(t) for t in getattr(c, key)]
    _proposals(out, f"{c.protocol}_proposals", c.proposals, c.protocol)
    if c.rekey_time != d.rekey_time:
        out["rekey_time"] = format_duration(c.rekey_time)
    if c.life_time != child_life_time(c.rekey_time):
        out["life_time"] = format_duration(c.life_time)
    if c.rand_time != max(c.life_time - c.rekey_time, 0.0):
        out["rand_time"] = format_duration(c.rand_time)
    for what in ("bytes", "packets"):
        rekey, life = getattr(c, f"rekey_{what}"), getattr(c, f"life_{what}")
        if rekey:
            out[f"rekey_{what}"] = format_size(rekey)
        if life != child_life_count(rekey):
            out[f"life_{what}"] = format_size(life)
    for key in ("start_action", "dpd_action", "close_action", "replay_window"):
        if getattr(c, key) != getattr(d, key):
            out[key] = getattr(c, key)
    if c.priority is not None:
        out["priority"] = c.priority
    return out


def _connection(c: ConnectionConfig, engine: EngineConfig) -> dict[str, Any]:
    d = ConnectionConfig(name=c.name)
    out: dict[str, Any] = {}
    if c.local_addrs:
        out["local_addrs"] = list(c.local_addrs)
    if c.remote_addrs:
        out["remote_addrs"] = list(c.remote_addrs)
    if c.local_port != engine.ike_port:
        out["local_port"] = c.local_port
    if c.remote_port != d.remote_port:
        out["remote_port"] = c.remote_port
    if c.remote_natt_port != d.remote_natt_port:
        out["remote_natt_port"] = c.remote_natt_port
    _proposals(out, "proposals", c.proposals, "ike")
    if c.local != d.local:
        out["local"] = _auth(c.local)
    if c.remote != d.remote:
        out["remote"] = _auth(c.remote)
    for key in ("encap", "fragmentation", "mobike", "send_certreq", "keyingtries"):
        if getattr(c, key) != getattr(d, key):
            out[key] = getattr(c, key)
    if c.dpd_delay != d.dpd_delay:
        out["dpd_delay"] = format_duration(c.dpd_delay)
    if c.rekey_time != d.rekey_time:
        out["rekey_time"] = format_duration(c.rekey_time)
    if c.over_time != ike_over_time(c.rekey_time):
        out["over_time"] = format_duration(c.over_time)
    if c.rand_time != c.over_time:
        out["rand_time"] = format_duration(c.rand_time)
    if c.ppk_id is not None:
        out["ppk_id"] = c.ppk_id
    if c.ppk_required:
        out["ppk_required"] = True
    for key in ("pools", "vips"):
        if getattr(c, key):
            out[key] = list(getattr(c, key))
    if c.expected_clients:
        out["expected_clients"] = c.expected_clients
    if c.redirect_to is not None:
        out["redirect_to"] = c.redirect_to
    if c.children:
        out["children"] = {ch.name: _child(ch) for ch in c.children}
    return out


def _rule(r: RuleConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"action": r.action}
    if not (r.local_ts == default_ts(None) and r.remote_ts == default_ts(None)):
        if r.local_ts != default_ts(r.remote_ts):
            out["local_ts"] = [str(t) for t in r.local_ts]
        out["remote_ts"] = [str(t) for t in r.remote_ts]
    if r.priority is not None:
        out["priority"] = r.priority
    return out


def _pool(p: PoolConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"addrs": p.addrs}
    for key in ("dns", "split_include", "split_exclude"):
        if getattr(p, key):
            out[key] = list(getattr(p, key))
    return out


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """The TOML document as plain data (what tomli-w writes)."""
    doc: dict[str, Any] = {"engine": _engine(policy.engine)}
    if policy.lab is not None:
        doc["lab"] = _lab(policy.lab)
    if policy.connections:
        doc["connections"] = {c.name: _connection(c, policy.engine) for c in policy.connections}
    if policy.rules:
        doc["rules"] = {r.name: _rule(r) for r in policy.rules}
    if policy.pools:
        doc["pools"] = {p.name: _pool(p) for p in policy.pools}
    return doc


def policy_to_toml(policy: Policy, *, header: bool = True) -> str:
    """TOML text that ``parse_policy`` reads back to an equal policy (secrets and path aside)."""
    return (HEADER if header else "") + tomli_w.dumps(policy_to_dict(policy))
