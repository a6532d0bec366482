"""TOML policy text -> :class:`~engine.policy.model.Policy`, with every error named by key path.

The shape follows swanctl.conf (see ``sample-configs/``)::

    [engine]                      datapath, listen, ike_port, natt_port, secrets, ...
    [lab]                         only with datapath = "lab": peers, rate, flows
    [connections.NAME]            local_addrs, remote_addrs, proposals, local, remote, ...
    [connections.NAME.children.CHILD]   mode, protocol, local_ts, remote_ts, esp_proposals, ...
    [rules.NAME]                  action = "bypass" | "discard", local_ts, remote_ts, priority

Defaults are swanctl's, including the derived ones: an IKE SA's ``over_time``
is 10% of its ``rekey_time`` and ``rand_time`` equals ``over_time``; a CHILD
SA's ``life_time`` is 110% of its ``rekey_time`` and ``rand_time`` the
difference; ``life_bytes``/``life_packets`` are 110% of the rekey values; a
connection's ``local_port`` is the engine's ``ike_port``; absent proposals
mean ``default``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from engine.policy import secrets as secrets_mod
from engine.policy import tomlfile
from engine.policy._reader import Reader, key_path
from engine.policy.findings import Finding, PolicyError
from engine.policy.identity import IdentityError, parse_identity
from engine.policy.model import (
    AuthConfig,
    ChildConfig,
    ConnectionConfig,
    EngineConfig,
    Policy,
    PoolConfig,
    Proposal,
    RuleConfig,
    Secrets,
)
from engine.policy import pq
from engine.policy import roadwarrior
from engine.pools import pool_range
from engine.policy.proposals import ProposalError, default_proposals, parse_proposal
from engine.policy.ts import TrafficSelector, TsSyntaxError, parse_ts
from engine.policy.parse_checks import CrossChecks
from engine.policy.parse_common import (
    AUTH_KEYS,
    AUTH_METHODS,
    CHILD_KEYS,
    CONNECTION_KEYS,
    ENGINE_KEYS,
    LAB_KEYS,
    POOL_KEYS,
    PRIORITY_MAX,
    REPLAY_WINDOW_MAX,
    REVOCATION,
    RULE_KEYS,
    TOP_KEYS,
    _NAME,
    single_host,
    split_host_port,
    _is_ip,
    address_kind,
    child_life_count,
    child_life_time,
    default_ts,
    ike_over_time,
)
from engine.policy.parse_engine import EngineSection


__all__ = ["load_policy", "parse_policy", "policy_dir", "single_host", "split_host_port", "address_kind",
           "ike_over_time", "child_life_time", "PRIORITY_MAX", "REPLAY_WINDOW_MAX", "AUTH_METHODS",
           # the keys each table may hold (engine.ops.reference documents them)
           "TOP_KEYS", "ENGINE_KEYS", "LAB_KEYS", "CONNECTION_KEYS", "AUTH_KEYS", "POOL_KEYS", "CHILD_KEYS",
           "RULE_KEYS"]


# -- the parser ----------------------------------------------------------------------------------
class _PolicyParser(EngineSection, CrossChecks):
    def __init__(self, file: str, base_dir: Path, load_secrets: bool, strict_secrets_mode: bool) -> None:
        self.r = Reader(file)
        self.file = file
        self.base_dir = base_dir
        self.load_secrets = load_secrets
        self.strict_secrets_mode = strict_secrets_mode
        self.extra: list[Finding] = []  # findings in other files (the secrets file)

    # -- sections --------------------------------------------------------------------------
    def proposals(self, t: dict, key: str, path: str, protocol: str) -> tuple[Proposal, ...]:
        r = self.r
        texts = r.str_list(t, key, path)
        if texts is None:
            return default_proposals(protocol)  # type: ignore[arg-type]
        p = key_path(path, key)
        if not texts:
            r.error(p, "empty list: remove the key to use the defaults, or list proposals")
            return default_proposals(protocol)  # type: ignore[arg-type]
        out: list[Proposal] = []
        for text in texts:
            try:
                if text.strip().lower() == "default":
                    out.extend(default_proposals(protocol))  # type: ignore[arg-type]
                else:
                    proposal = parse_proposal(text, protocol)  # type: ignore[arg-type]
                    problems = pq.proposal_problems(proposal)
                    for problem in problems:
                        r.error(p, problem)
                    if not problems:
                        out.append(proposal)
            except ProposalError as exc:
                r.error(p, str(exc))
        return tuple(out) or default_proposals(protocol)  # type: ignore[arg-type]

    def addrs(self, t: dict, key: str, path: str) -> tuple[str, ...]:
        values = self.r.str_list(t, key, path, [])
        out = []
        for v in values:
            if address_kind(v) is None:
                self.r.error(key_path(path, key), f"{v!r} is not an address, network, range, DNS name or %any")
            else:
                out.append(v.strip())
        return tuple(out)

    def auth(self, t: dict, side: str, path: str) -> AuthConfig:
        r = self.r
        p = key_path(path, side)
        a = r.table(t, side, path)
        if a is None:
            return AuthConfig()
        r.check_keys(a, p, AUTH_KEYS)
        method = a.get("auth")
        if method == "eap-identity":
            r.error(key_path(p, "auth"), 'EAP-Identity authenticates nobody (it only asks a name): use '
                    '"eap-mschapv2" or "eap-tls", with eap_id = "%any" to have the gateway ask the name first')
            method = "psk"
        elif isinstance(method, str) and method not in AUTH_METHODS:
            hint = {"eap": 'the EAP methods here are "eap-mschapv2", "eap-tls" and "eap" (either)',
                    "rsa": 'use "pubkey"', "ecdsa": 'use "pubkey"', "secret": 'use "psk"',
                    "xauth": "IKEv1 XAuth does not exist in IKEv2: use EAP"}.get(method.split("-")[0], "")
            r.error(key_path(p, "auth"), 'must be "psk", "pubkey", "eap-mschapv2", "eap-tls" or "eap", not '
                    f"{method!r}" + (f" ({hint})" if hint else ""))
            method = "psk"
        else:
            method = r.str_(a, "auth", p, "psk")
        ident = None
        raw_id = r.str_(a, "id", p)
        if raw_id is not None:
            try:
                ident = parse_identity(raw_id)
            except IdentityError as exc:
                r.error(key_path(p, "id"), f"bad identity: {exc}")
        certs = tuple(r.str_list(a, "certs", p, []))
        cacerts = tuple(r.str_list(a, "cacerts", p, []))
        if side == "local" and method == "pubkey" and not certs:
            r.error(key_path(p, "certs"), 'auth = "pubkey" needs our certificate: certs = ["gw.crt"]')
        if side == "local" and ident is not None and ident.kind == "any":
            r.error(key_path(p, "id"), "%any is only for the remote side: our own identity must be concrete")
        eap_id = None
        raw_eap_id = r.str_(a, "eap_id", p)
        if raw_eap_id is not None:
            if not (method == "eap" or method.startswith("eap-")):
                r.error(key_path(p, "eap_id"), f'eap_id needs an EAP auth (auth is "{method}")')
            eap_id = raw_eap_id.strip()
            if not eap_id or len(eap_id.encode()) > 253 or not eap_id.isprintable():
                r.error(key_path(p, "eap_id"), "an EAP identity is 1 to 253 bytes of printable text")
                eap_id = None
            elif side == "local" and ("*" in eap_id or eap_id.startswith("%")):
                r.error(key_path(p, "eap_id"), "%any and patterns are only for the remote side: our EAP name "
                        "must be concrete")
        if side == "local" and method == "eap-tls" and not certs:
            r.error(key_path(p, "certs"), 'auth = "eap-tls" needs our client certificate: certs = ["me.crt"]')
        revocation = r.str_(a, "revocation", p, "relaxed", choices=REVOCATION)
        if revocation != "relaxed" and side == "local":
            r.error(key_path(p, "revocation"), "revocation is a remote setting: how the peer's certificates are "
                    "checked")
        elif revocation != "relaxed" and method not in ("pubkey", "eap-tls", "eap"):
            r.error(key_path(p, "revocation"), f'revocation needs certificates (auth is "{method}")')
        cert_policy = tuple(r.str_list(a, "cert_policy", p, []))
        if cert_policy and side == "local":
            r.error(key_path(p, "cert_policy"), "cert_policy is a remote setting: the policies the peer's "
                    "certificate must hold")
        elif cert_policy and method != "pubkey":  # (EAP-TLS does not check it yet)
            r.error(key_path(p, "cert_policy"), f'cert_policy needs auth = "pubkey" (auth is "{method}")')
        for oid in cert_policy:
            if not re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", oid) or len(oid) > 200:
                r.error(key_path(p, "cert_policy"), f"{oid!r} is not a dotted OID like 1.3.6.1.4.1.311.21.8.1")
        return AuthConfig(auth=method, id=ident, certs=certs, cacerts=cacerts, eap_id=eap_id,
                          revocation=revocation, cert_policy=cert_policy)  # type: ignore[arg-type]

    def ts_list(self, t: dict, key: str, path: str) -> tuple[TrafficSelector, ...] | None:
        values = self.r.str_list(t, key, path)
        if values is None:
            return None
        p = key_path(path, key)
        if not values:
            self.r.error(p, "empty list: remove the key for the default, or list traffic selectors")
            return None
        out = []
        for v in values:
            try:
                out.append(parse_ts(v))
            except TsSyntaxError as exc:
                self.r.error(p, f"bad traffic selector: {exc}")
        return tuple(out) or None

    def child(self, name: str, t: dict, path: str) -> ChildConfig:
        r = self.r
        r.check_keys(t, path, CHILD_KEYS)
        d = ChildConfig(name=name)
        mode = t.get("mode")
        if mode in ("pass", "drop"):
            r.error(key_path(path, "mode"), f'"{mode}" is a strongSwan shunt: write it as a [rules.NAME] '
                    f'section with action = "{"bypass" if mode == "pass" else "discard"}"')
            mode = d.mode
        else:
            mode = r.str_(t, "mode", path, d.mode, choices=("tunnel", "transport"))
        # swanctl has no protocol key: ah_proposals alone means AH. Ours is explicit, and must agree.
        default_protocol = "ah" if "ah_proposals" in t and "esp_proposals" not in t else "esp"
        protocol = r.str_(t, "protocol", path, default_protocol, choices=("esp", "ah"))
        wrong = "ah_proposals" if protocol == "esp" else "esp_proposals"
        if wrong in t:
            r.error(key_path(path, wrong), f'{wrong} in a child with protocol = "{protocol}": use '
                    f'{protocol}_proposals, or set protocol = "{"ah" if protocol == "esp" else "esp"}"')
        proposals = self.proposals(t, f"{protocol}_proposals", path, protocol)
        local_ts = self.ts_list(t, "local_ts", path) or d.local_ts
        remote_ts = self.ts_list(t, "remote_ts", path) or d.remote_ts
        rekey_time = r.duration(t, "rekey_time", path, d.rekey_time)
        life_time = r.duration(t, "life_time", path, child_life_time(rekey_time))
        rand_time = r.duration(t, "rand_time", path, max(life_time - rekey_time, 0.0))
        if rekey_time and life_time and life_time <= rekey_time:
            r.error(key_path(path, "life_time"), f"must be longer than rekey_time ({rekey_time:g}s) so the "
                    "CHILD SA is rekeyed before it expires")
        if "rand_time" in t and rekey_time and rand_time >= rekey_time:
            r.error(key_path(path, "rand_time"), f"must be shorter than rekey_time ({rekey_time:g}s)")
        rekey_bytes = r.size(t, "rekey_bytes", path, 0)
        life_bytes = r.size(t, "life_bytes", path, child_life_count(rekey_bytes))
        rekey_packets = r.size(t, "rekey_packets", path, 0)
        life_packets = r.size(t, "life_packets", path, child_life_count(rekey_packets))
        for what, rekey, life in (("bytes", rekey_bytes, life_bytes), ("packets", rekey_packets, life_packets)):
            if rekey and life and life <= rekey:
                r.error(key_path(path, f"life_{what}"), f"must be more than rekey_{what} ({rekey})")
        return ChildConfig(
            name=name, mode=mode, protocol=protocol, local_ts=local_ts, remote_ts=remote_ts, proposals=proposals,
            rekey_time=rekey_time, life_time=life_time, rand_time=rand_time,
            rekey_bytes=rekey_bytes, life_bytes=life_bytes, rekey_packets=rekey_packets, life_packets=life_packets,
            start_action=r.str_(t, "start_action", path, d.start_action, choices=("none", "trap", "start")),
            dpd_action=r.str_(t, "dpd_action", path, d.dpd_action, choices=("clear", "trap", "restart")),
            close_action=r.str_(t, "close_action", path, d.close_action, choices=("none", "trap", "start")),
            replay_window=r.int_(t, "replay_window", path, d.replay_window, lo=0, hi=REPLAY_WINDOW_MAX),
            priority=self.priority(t, path),
        )

    def priority(self, t: dict, path: str) -> int | None:
        if "priority" not in t:
            return None
        return self.r.int_(t, "priority", path, None, lo=1, hi=PRIORITY_MAX)  # type: ignore[arg-type]

    def connection(self, name: str, t: dict, path: str, engine: EngineConfig) -> ConnectionConfig:
        r = self.r
        r.check_keys(t, path, CONNECTION_KEYS)
        d = ConnectionConfig(name=name)
        local_port = r.int_(t, "local_port", path, engine.ike_port, lo=1, hi=65535)
        if "local_port" in t and local_port not in (engine.ike_port, engine.natt_port):
            r.error(key_path(path, "local_port"), f"the engine listens on ike_port ({engine.ike_port}) and "
                    f"natt_port ({engine.natt_port}) only")
        rekey_time = r.duration(t, "rekey_time", path, d.rekey_time)
        over_time = r.duration(t, "over_time", path, ike_over_time(rekey_time))
        rand_time = r.duration(t, "rand_time", path, over_time)
        if "rand_time" in t and rekey_time and rand_time >= rekey_time:
            r.error(key_path(path, "rand_time"), f"must be shorter than rekey_time ({rekey_time:g}s)")
        children: list[ChildConfig] = []
        ct = r.table(t, "children", path) or {}
        for cname, ctable in ct.items():
            cpath = key_path(key_path(path, "children"), cname)
            if not _NAME.match(cname):
                r.error(cpath, "a child name is 1 to 64 characters without spaces")
            if not isinstance(ctable, dict):
                r.error(cpath, f"expected a table [{cpath}], got a value")
                continue
            children.append(self.child(cname, ctable, cpath))
        ppk_id = r.str_(t, "ppk_id", path)
        if ppk_id is not None and (not ppk_id.strip() or len(ppk_id.encode()) > secrets_mod.PPK_ID_MAX
                                   or not ppk_id.isprintable()):
            r.error(key_path(path, "ppk_id"), f"a PPK_ID is 1 to {secrets_mod.PPK_ID_MAX} bytes of printable text "
                    "(the id of a [ppk.NAME] entry in the secrets file)")
            ppk_id = None
        ppk_required = r.bool_(t, "ppk_required", path, False)
        vips = tuple(r.str_list(t, "vips", path, []))
        for v in vips:
            if not _is_ip(v):
                r.error(key_path(path, "vips"), f'{v!r} is not an address: "0.0.0.0" asks for any IPv4 address, '
                        '"::" for any IPv6 address')
        redirect_to = r.str_(t, "redirect_to", path)
        if redirect_to is not None and address_kind(redirect_to) not in ("ip", "dns"):
            r.error(key_path(path, "redirect_to"), f"{redirect_to!r} is not a gateway address or host name")
        conn = ConnectionConfig(
            name=name,
            local_addrs=self.addrs(t, "local_addrs", path),
            remote_addrs=self.addrs(t, "remote_addrs", path),
            local_port=local_port,
            remote_port=r.int_(t, "remote_port", path, d.remote_port, lo=1, hi=65535),
            remote_natt_port=r.int_(t, "remote_natt_port", path, d.remote_natt_port, lo=1, hi=65535),
            proposals=self.proposals(t, "proposals", path, "ike"),
            local=self.auth(t, "local", path),
            remote=self.auth(t, "remote", path),
            encap=r.bool_(t, "encap", path, d.encap),
            dpd_delay=r.duration(t, "dpd_delay", path, d.dpd_delay),
            rekey_time=rekey_time,
            over_time=over_time,
            rand_time=rand_time,
            fragmentation=r.bool_(t, "fragmentation", path, d.fragmentation),
            mobike=r.bool_(t, "mobike", path, d.mobike),
            send_certreq=r.bool_(t, "send_certreq", path, d.send_certreq),
            keyingtries=r.int_(t, "keyingtries", path, d.keyingtries, lo=0),
            unique=r.str_(t, "unique", path, d.unique, choices=("no", "never", "replace", "keep")),
            children=tuple(children),
            ppk_id=ppk_id,
            ppk_required=ppk_required,
            pools=tuple(r.str_list(t, "pools", path, [])),
            vips=tuple(v.strip() for v in vips if _is_ip(v)),
            expected_clients=r.int_(t, "expected_clients", path, 0, lo=0),
            redirect_to=redirect_to,
        )
        problem = pq.ppk_problem(conn)
        if problem:
            r.error(key_path(path, "ppk_id" if "ppk_id" in t else "ppk_required"), problem)
        for key, message in roadwarrior.connection_problems(conn):
            where = path
            for part in key.split("."):
                where = key_path(where, part)
            r.error(where, message)
        return conn

    def pool(self, name: str, t: dict, path: str) -> PoolConfig | None:
        r = self.r
        r.check_keys(t, path, POOL_KEYS)
        addrs = t.get("addrs")
        if addrs is None:
            r.error(key_path(path, "addrs"), 'missing: the addresses to lease, a network ("198.51.100.128/25") '
                    'or a range ("198.51.100.130-198.51.100.250")')
            return None
        addrs = r.str_(t, "addrs", path)
        if addrs is None:
            return None
        try:
            first, _ = pool_range(addrs)
        except ValueError as exc:
            r.error(key_path(path, "addrs"), str(exc))
            return None
        dns = r.str_list(t, "dns", path, [])
        for d in dns:
            if not _is_ip(d):
                r.error(key_path(path, "dns"), f"{d!r} is not an IP address")
        nets = {}
        for key in ("split_include", "split_exclude"):
            nets[key] = r.str_list(t, key, path, [])
            for n in nets[key]:
                try:
                    ipaddress.ip_network(n.strip(), strict=False)
                except ValueError:
                    r.error(key_path(path, key), f"{n!r} is not a network (CIDR, e.g. 198.51.100.0/24)")
        return PoolConfig(name=name, addrs=addrs.strip(), dns=tuple(d.strip() for d in dns),
                          split_include=tuple(n.strip() for n in nets["split_include"]),
                          split_exclude=tuple(n.strip() for n in nets["split_exclude"]))

    def rule(self, name: str, t: dict, path: str) -> RuleConfig | None:
        r = self.r
        r.check_keys(t, path, RULE_KEYS)
        action = t.get("action")
        if action is None:
            r.error(key_path(path, "action"), 'missing: action = "bypass" (pass in clear) or "discard" (drop)')
            return None
        if action in ("pass", "drop", "block", "permit", "allow", "deny"):
            good = "bypass" if action in ("pass", "permit", "allow") else "discard"
            r.error(key_path(path, "action"), f'must be "bypass" or "discard", not {action!r} (did you mean "{good}"?)')
            return None
        action = r.str_(t, "action", path, None, choices=("bypass", "discard"))
        local_ts = self.ts_list(t, "local_ts", path)
        remote_ts = self.ts_list(t, "remote_ts", path)
        for side, ts in (("local_ts", local_ts), ("remote_ts", remote_ts)):
            if ts and any(x.dynamic for x in ts):
                r.error(key_path(path, side), "dynamic is only for children: name the addresses of a rule")
        if action is None:
            return None
        return RuleConfig(name=name, action=action,
                          local_ts=local_ts or default_ts(remote_ts),
                          remote_ts=remote_ts or default_ts(local_ts),
                          priority=self.priority(t, path))

    # -- whole policy ------------------------------------------------------------------------
    def policy(self, doc: dict) -> Policy:
        r = self.r
        r.check_keys(doc, "", TOP_KEYS, what="section")
        engine = self.engine(doc)
        lab = self.lab(doc, engine)
        connections: list[ConnectionConfig] = []
        for name, t in (r.table(doc, "connections", "") or {}).items():
            path = key_path("connections", name)
            if not _NAME.match(name):
                r.error(path, "a connection name is 1 to 64 characters without spaces")
            if not isinstance(t, dict):
                r.error(path, f"expected a table [{path}], got a value")
                continue
            connections.append(self.connection(name, t, path, engine))
        rules: list[RuleConfig] = []
        for name, t in (r.table(doc, "rules", "") or {}).items():
            path = key_path("rules", name)
            if not _NAME.match(name):
                r.error(path, "a rule name is 1 to 64 characters without spaces")
            if not isinstance(t, dict):
                r.error(path, f"expected a table [{path}], got a value")
                continue
            rule = self.rule(name, t, path)
            if rule is not None:
                rules.append(rule)
        pools: list[PoolConfig] = []
        for name, t in (r.table(doc, "pools", "") or {}).items():
            path = key_path("pools", name)
            if not _NAME.match(name):
                r.error(path, "a pool name is 1 to 64 characters without spaces")
            if not isinstance(t, dict):
                r.error(path, f"expected a table [{path}], got a value")
                continue
            pool = self.pool(name, t, path)
            if pool is not None:
                pools.append(pool)
        self.pool_references(connections, pools, doc)
        self.names(connections, rules)
        if engine.datapath == "lab":
            self.lab_addresses(engine, connections)
        secrets = self.secrets(engine) if self.load_secrets else Secrets()
        if self.load_secrets and secrets is not None:
            for c in connections:
                self.psk(c, engine, secrets)
                self.ppk(c, engine, secrets)
                self.eap_secrets(c, engine, secrets)
        path = None if self.file == "<string>" else self.file
        return Policy(engine=engine, connections=tuple(connections), rules=tuple(rules),
                      secrets=secrets or Secrets(), path=path, lab=lab, pools=tuple(pools))

def parse_policy(text: str, path: str | os.PathLike | None = None, *, load_secrets: bool = True,
                 strict_secrets_mode: bool = True) -> Policy:
    """Parse and validate policy text. ``path`` names the file in findings and anchors relative paths
    (secrets file, lab peers). Raises :class:`PolicyError` with every error.

    ``strict_secrets_mode``: refuse a secrets file others may read (the engine's
    behaviour, except for labs); ``check`` turns it off and warns instead.
    """
    file = os.fspath(path) if path is not None else "<string>"
    base_dir = Path(file).parent if path is not None else Path.cwd()
    doc = tomlfile.loads(text, file)
    parser = _PolicyParser(file, base_dir, load_secrets, strict_secrets_mode)
    policy = parser.policy(doc)
    findings = parser.r.findings + parser.extra
    if any(f.severity == "error" for f in findings):
        raise PolicyError(findings)
    return policy


def load_policy(path: str | os.PathLike, *, load_secrets: bool = True, strict_secrets_mode: bool = True) -> Policy:
    """Read and validate a policy file (and its secrets file). Raises :class:`PolicyError`."""
    file = os.fspath(path)
    try:
        text = tomlfile.read_text(file)
    except tomlfile.FileProblem as exc:
        raise PolicyError([Finding(file, "", "error", f"cannot read the policy: {exc}")]) from None
    return parse_policy(text, file, load_secrets=load_secrets, strict_secrets_mode=strict_secrets_mode)


def policy_dir(policy: Policy) -> Path:
    return Path(policy.path).parent if policy.path else Path.cwd()
