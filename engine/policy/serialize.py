"""Policy -> TOML text, the inverse of :func:`engine.policy.parse.parse_policy`.

Only values that differ from what the parser would assume are written, so a
form edit produces a short file an admin can still read. Secrets are never
written: the policy names its secrets file, nothing more.

An admin's file keeps its comments and layout: :func:`update_toml` changes
only the keys whose meaning changed (tomlkit), and the form helpers
(:func:`load_document`, :func:`dump_document`, :func:`set_key`) edit one key
of the document in place. A new file is written whole (tomli-w).
"""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any

import tomli_w
import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, InlineTable, Table

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
    parse_policy,
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
    for key in ("tun_device", "tun_mtu", "tun_offload", "max_packet", "cookie_threshold_ip", "block_threshold",
                "init_limit_half_open"):
        if getattr(e, key) != getattr(d, key):
            out[key] = getattr(e, key)
    for key in ("state_dir", "save_keys", "metrics_textfile", "metrics_listen"):
        if getattr(e, key) is not None:
            out[key] = getattr(e, key)
    if e.metrics_interval != d.metrics_interval:
        out["metrics_interval"] = format_duration(e.metrics_interval)
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
    if a.revocation != "relaxed":
        out["revocation"] = a.revocation
    if a.cert_policy:
        out["cert_policy"] = list(a.cert_policy)
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
    for key in ("encap", "fragmentation", "mobike", "send_certreq", "keyingtries", "unique"):
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


# -- keeping an admin's file: comments, layout, and the way each value was written ------------------
_INLINE = ("local", "remote")
_DERIVED = ("local_port", "over_time", "rand_time", "life_time", "life_bytes", "life_packets")
"""Keys whose default is computed from another key (engine.policy.parse)."""
"""Sub-tables written inline (``local = { auth = "psk", id = "..." }``), as the samples do."""


def _comparable(policy: Policy) -> Policy:
    return dataclasses.replace(policy, path=None, secrets=dataclasses.replace(policy.secrets, path=None))


def _new_item(key: str, value: Any) -> Any:
    if isinstance(value, dict) and key in _INLINE:
        table = tomlkit.inline_table()
        table.update(value)
        return table
    if isinstance(value, dict):
        table = tomlkit.table(is_super_table=not any(not isinstance(v, dict) for v in value.values()))
        for k, v in value.items():
            table[k] = _new_item(k, v)
        table.add(tomlkit.nl())  # a blank line before whatever table follows
        return table
    return value


def _is_table(item: Any) -> bool:
    return isinstance(item, (Table, InlineTable, Container))


def _merge(item, old: dict[str, Any], new: dict[str, Any], strict: bool) -> None:
    """Make ``item`` (a tomlkit table) mean ``new`` where its normalized form ``old`` differs.

    Keys whose normalized values agree are left exactly as written (an explicit default,
    ``"1h"`` written as ``3600``, their comments). ``strict`` also drops the derived defaults the
    new normalized form leaves out (an explicit ``over_time`` that a new ``rekey_time`` contradicts)."""
    for key, value in new.items():
        if key in old and old[key] == value:
            continue
        current = item.get(key) if key in item else None
        if isinstance(value, dict) and isinstance(old.get(key), dict) and _is_table(current):
            _merge(current, old[key], value, strict)
        else:
            item[key] = _new_item(key, value)
    for key in list(item.keys()):
        if key in new:
            continue
        if key in old or (strict and key in _DERIVED):
            del item[key]


def update_toml(old_text: str, policy: Policy, path: str | None = None) -> str:
    """``old_text`` changed to mean ``policy``, keeping its comments and layout where the meaning
    did not change. Falls back to :func:`policy_to_toml` when the old text does not parse."""
    try:
        old_policy = parse_policy(old_text, path, load_secrets=False)
        doc = tomlkit.parse(old_text)
    except (ValueError, tomlkit.exceptions.TOMLKitError):
        return policy_to_toml(policy)
    old, new = policy_to_dict(old_policy), policy_to_dict(policy)
    want = _comparable(parse_policy(policy_to_toml(policy, header=False), path, load_secrets=False))
    for strict in (False, True):
        attempt = tomlkit.parse(old_text) if strict else doc
        _merge(attempt, old, new, strict)
        text = tomlkit.dumps(attempt)
        try:
            if _comparable(parse_policy(text, path, load_secrets=False)) == want:
                return text
        except ValueError:
            pass
    return policy_to_toml(policy)


def document_text(data: dict[str, Any]) -> str:
    """Plain TOML data as compact text: arrays on one line, ``local``/``remote`` inline, a blank line
    between tables (for files written from scratch: imports)."""
    doc = tomlkit.document()
    for key, value in data.items():
        doc[key] = _new_item(key, value)
    text = tomlkit.dumps(doc)
    while "\n\n\n" in text:  # nested new tables each end with a blank line: one is enough
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip("\n") + "\n"


# -- the console's form: one key at a time ----------------------------------------------------------
def load_document(text: str) -> tomlkit.TOMLDocument | None:
    """A TOML document that remembers comments and layout (dict-like), or None if it does not parse."""
    try:
        tomllib.loads(text)  # the parser the engine uses decides what is valid TOML
        return tomlkit.parse(text)
    except (tomllib.TOMLDecodeError, tomlkit.exceptions.TOMLKitError):
        return None


def dump_document(doc) -> str:
    """The text of a document from :func:`load_document` (or of a plain dict)."""
    return tomlkit.dumps(doc) if isinstance(doc, tomlkit.TOMLDocument) else tomli_w.dumps(doc)


def set_key(text: str, path: tuple[str, ...], value: Any) -> str:
    """``text`` with the key at ``path`` set to ``value`` (None removes it); every other line,
    comment and blank stays as it was. Missing tables on the way are created."""
    doc = tomlkit.parse(text)
    table: Any = doc
    for i, part in enumerate(path[:-1]):
        if part not in table:
            if value is None:
                return text
            # The whole missing branch at once, so it is written as one new [a.b.c] table.
            nested: Any = value
            for name in reversed(path[i + 1:]):
                nested = {name: nested}
            table[part] = _new_item(part, nested)
            return tomlkit.dumps(doc)
        table = table[part]
        if isinstance(table, AoT) or not _is_table(table):
            raise ValueError(f"{'.'.join(path)}: {part} is not a table")
    key = path[-1]
    if value is None:
        if key in table:
            del table[key]
    else:
        table[key] = _new_item(key, value)
    return tomlkit.dumps(doc)
