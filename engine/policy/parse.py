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
from engine.policy.identity import IdentityError, identity_for_address, parse_identity
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
    Secrets,
)
from engine.policy import pq
from engine.policy import roadwarrior
from engine.pools import pool_range
from engine.policy.proposals import ProposalError, default_proposals, parse_proposal
from engine.policy.ts import TrafficSelector, TsSyntaxError, parse_ts

TOP_KEYS = ("engine", "lab", "connections", "rules", "pools")
ENGINE_KEYS = ("datapath", "listen", "ike_port", "natt_port", "secrets", "control", "retransmit_timeout",
               "retransmit_base", "retransmit_tries", "half_open_threshold", "keepalive", "crls", "pki",
               "tun_device", "tun_mtu", "tun_offload", "state_dir", "save_keys", "metrics_textfile",
               "metrics_listen", "metrics_interval", "max_packet", "cookie_threshold_ip", "block_threshold",
               "init_limit_half_open")
LAB_KEYS = ("peers", "rate", "flows")
CONNECTION_KEYS = ("local_addrs", "remote_addrs", "local_port", "remote_port", "remote_natt_port", "proposals",
                   "local", "remote",
                   "encap", "dpd_delay", "rekey_time", "over_time", "rand_time", "fragmentation", "mobike",
                   "send_certreq", "keyingtries", "unique", "children", "ppk_id", "ppk_required", "pools", "vips",
                   "expected_clients", "redirect_to")
AUTH_KEYS = ("auth", "id", "certs", "cacerts", "eap_id", "revocation", "cert_policy")
REVOCATION = ("relaxed", "ifuri", "strict")
POOL_KEYS = ("addrs", "dns", "split_include", "split_exclude")
AUTH_METHODS = ("psk", "pubkey", "eap-mschapv2", "eap-tls", "eap")
CHILD_KEYS = ("mode", "protocol", "local_ts", "remote_ts", "esp_proposals", "ah_proposals", "rekey_time",
              "life_time", "rand_time", "rekey_bytes", "life_bytes", "rekey_packets", "life_packets",
              "start_action", "dpd_action", "close_action", "replay_window", "priority")
RULE_KEYS = ("action", "local_ts", "remote_ts", "priority")

PRIORITY_MAX = 99_999
"""Explicit priorities are 1..PRIORITY_MAX; computed ones lie above, so an explicit one always wins."""
REPLAY_WINDOW_MAX = 4096
LAB_FLOWS = ("icmp", "udp", "tcp")
_NAME = re.compile(r"^[^\s\x00-\x1f\x7f]{1,64}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


# -- derived defaults (shared with the serializer so it writes only what differs) ----------
def ike_over_time(rekey_time: float) -> float:
    return rekey_time / 10


def child_life_time(rekey_time: float) -> float:
    return rekey_time * 11 / 10


def child_life_count(rekey: int) -> int:
    return rekey + rekey // 10


def default_ts(other: tuple[TrafficSelector, ...] | None) -> tuple[TrafficSelector, ...]:
    """A rule side left out: everything, in the IP versions the other side uses."""
    versions = sorted({t.version for t in other}) if other else [4, 6]
    return tuple(TrafficSelector.any(v) for v in versions)


# -- addresses ---------------------------------------------------------------------------------
def address_kind(text: str) -> str | None:
    """What an entry of local_addrs/remote_addrs is: any, ip, network, range, dns; None if invalid."""
    t = text.strip()
    if t in ("%any", "%any4", "%any6"):
        return "any"
    try:
        ipaddress.ip_address(t)
        return "ip"
    except ValueError:
        pass
    if "/" in t:
        try:
            ipaddress.ip_network(t, strict=False)
            return "network"
        except ValueError:
            return None
    if "-" in t:
        lo, _, hi = t.partition("-")
        if _is_ip(lo) and _is_ip(hi):
            a, b = ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip())
            return "range" if a.version == b.version and a <= b else None
    if _HOSTNAME.match(t) and not t.replace(".", "").isdigit():
        return "dns"
    return None


def split_host_port(text: str) -> tuple[str | None, int | None]:
    """``"127.0.0.1:9814"`` or ``"[::1]:9814"`` -> (address, port); (None, None) when malformed."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None, None
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return (host, int(port)) if _is_ip(host) else (None, None)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
        return True
    except ValueError:
        return False


def single_host(addrs: tuple[str, ...]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address when ``addrs`` is exactly one IP literal (what ``dynamic`` resolves to)."""
    if len(addrs) == 1 and address_kind(addrs[0]) == "ip":
        return ipaddress.ip_address(addrs[0].strip())
    return None


def _is_loopback(text: str) -> bool:
    kind = address_kind(text)
    t = text.strip()
    if kind == "ip":
        return ipaddress.ip_address(t).is_loopback
    if kind == "network":
        net = ipaddress.ip_network(t, strict=False)
        return net.network_address.is_loopback and net.broadcast_address.is_loopback
    if kind == "range":
        a, b = (ipaddress.ip_address(p.strip()) for p in t.split("-", 1))
        return a.is_loopback and b.is_loopback
    return False


# -- the parser ----------------------------------------------------------------------------------
class _PolicyParser:
    def __init__(self, file: str, base_dir: Path, load_secrets: bool, strict_secrets_mode: bool) -> None:
        self.r = Reader(file)
        self.file = file
        self.base_dir = base_dir
        self.load_secrets = load_secrets
        self.strict_secrets_mode = strict_secrets_mode
        self.extra: list[Finding] = []  # findings in other files (the secrets file)

    # -- sections --------------------------------------------------------------------------
    def engine(self, doc: dict) -> EngineConfig:
        r, P = self.r, "engine"
        t = r.table(doc, "engine", "") or {}
        r.check_keys(t, P, ENGINE_KEYS)
        d = EngineConfig()
        listen = r.str_list(t, "listen", P, [])
        for a in listen:
            if not _is_ip(a):
                r.error(key_path(P, "listen"), f"{a!r} is not an IP address (listen takes addresses, not names)")
        ike_port = r.int_(t, "ike_port", P, d.ike_port, lo=1, hi=65535)
        natt_port = r.int_(t, "natt_port", P, d.natt_port, lo=1, hi=65535)
        if ike_port == natt_port:
            r.error(key_path(P, "natt_port"), f"must differ from ike_port ({ike_port}): "
                    "NAT-T traffic is told apart by its port")
        secrets = r.str_(t, "secrets", P)
        if secrets == "":
            r.error(key_path(P, "secrets"), "empty path: remove the key or name the secrets file")
            secrets = None
        control = r.str_(t, "control", P)
        pki_dir = r.str_(t, "pki", P)
        if pki_dir is not None and not pki_dir.strip():
            r.error(key_path(P, "pki"), "empty path: remove the key (the CA folder is then pki/ next to this "
                    "file) or name the CA folder")
            pki_dir = None
        return EngineConfig(
            datapath=r.str_(t, "datapath", P, d.datapath, choices=("kernel", "userspace", "lab")),
            listen=tuple(a.strip() for a in listen),
            ike_port=ike_port,
            natt_port=natt_port,
            secrets=secrets,
            control=control,
            retransmit_timeout=self._positive(t, "retransmit_timeout", P, d.retransmit_timeout),
            retransmit_base=r.float_(t, "retransmit_base", P, d.retransmit_base, lo=1.0),
            retransmit_tries=r.int_(t, "retransmit_tries", P, d.retransmit_tries, lo=0),
            half_open_threshold=r.int_(t, "half_open_threshold", P, d.half_open_threshold, lo=0),
            keepalive=r.duration(t, "keepalive", P, d.keepalive),
            crls=tuple(r.str_list(t, "crls", P, [])),
            pki_dir=pki_dir,
            tun_device=self._tun_device(t, P, d.tun_device),
            tun_mtu=r.int_(t, "tun_mtu", P, d.tun_mtu, lo=576, hi=65535),
            tun_offload=r.str_(t, "tun_offload", P, d.tun_offload, choices=("on", "off", "auto", "jumbo")),
            state_dir=self._folder(t, "state_dir", P),
            save_keys=self._folder(t, "save_keys", P),
            metrics_textfile=self._folder(t, "metrics_textfile", P),
            metrics_listen=self._metrics_listen(t, P),
            metrics_interval=self._positive(t, "metrics_interval", P, d.metrics_interval),
            # RFC 7296 §2: every implementation takes 1280-byte messages; 65535 is the UDP limit.
            max_packet=r.int_(t, "max_packet", P, d.max_packet, lo=1280, hi=65535),
            cookie_threshold_ip=r.int_(t, "cookie_threshold_ip", P, d.cookie_threshold_ip, lo=1),
            block_threshold=r.int_(t, "block_threshold", P, d.block_threshold, lo=1),
            init_limit_half_open=r.int_(t, "init_limit_half_open", P, d.init_limit_half_open, lo=0),
        )

    def _folder(self, t: dict, key: str, path: str) -> str | None:
        value = self.r.str_(t, key, path)
        if value is not None and not value.strip():
            self.r.error(key_path(path, key), "empty path: remove the key or name a path")
            return None
        return value

    def _metrics_listen(self, t: dict, path: str) -> str | None:
        value = self.r.str_(t, "metrics_listen", path)
        if value is None:
            return None
        host, port = split_host_port(value)
        if host is None or port is None:
            self.r.error(key_path(path, "metrics_listen"), f"{value!r} is not ADDRESS:PORT "
                         '(e.g. "127.0.0.1:9814" or "[::1]:9814")')
            return None
        if not ipaddress.ip_address(host).is_loopback:
            self.r.error(key_path(path, "metrics_listen"), f"{host} is not a loopback address: the metrics "
                         "endpoint has no authentication, so it listens on 127.0.0.1 or ::1 only (let "
                         "node_exporter's textfile collector or a local proxy take them further)")
            return None
        return value

    def _tun_device(self, t: dict, path: str, default: str) -> str:
        name = self.r.str_(t, "tun_device", path, default)
        if not name or len(name) > 15 or "/" in name or any(c.isspace() for c in name):
            self.r.error(key_path(path, "tun_device"), f"{name!r} is not a usable interface name "
                         "(1-15 characters, no '/' or spaces)")
            return default
        return name

    def _positive(self, t: dict, key: str, path: str, default: float) -> float:
        v = self.r.duration(t, key, path, default)
        if v <= 0:
            self.r.error(key_path(path, key), "must be longer than 0s")
            return default
        return v

    def lab(self, doc: dict, engine: EngineConfig) -> LabConfig | None:
        r, P = self.r, "lab"
        t = r.table(doc, "lab", "")
        if t is None:
            return None
        r.check_keys(t, P, LAB_KEYS)
        if engine.datapath != "lab":
            r.error(P, f'a [lab] section needs datapath = "lab" in [engine] (it is "{engine.datapath}")')
        d = LabConfig()
        peers = r.str_list(t, "peers", P, [])
        for peer in peers:
            if not peer:
                r.error(key_path(P, "peers"), "empty file name")
                continue
            target = self.base_dir / peer
            if not target.is_file():
                r.error(key_path(P, "peers"), f"peer policy {peer!r} not found next to this file")
            elif self.file != "<string>" and target.resolve() == (self.base_dir / Path(self.file).name).resolve():
                r.error(key_path(P, "peers"), f"{peer!r} is this file: a peer is another endpoint's policy")
        rate = r.float_(t, "rate", P, d.rate, lo=0.0)
        if "rate" in t and rate <= 0:
            r.error(key_path(P, "rate"), "must be more than 0 packets per second")
            rate = d.rate
        flows = r.str_list(t, "flows", P, list(d.flows))
        for f in flows:
            if f not in LAB_FLOWS:
                r.error(key_path(P, "flows"), f"unknown flow {f!r}: use {', '.join(LAB_FLOWS)}")
        flows = [f for f in flows if f in LAB_FLOWS]
        return LabConfig(peers=tuple(peers), rate=rate, flows=tuple(dict.fromkeys(flows)))  # type: ignore[arg-type]

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

    def pool_references(self, connections: list[ConnectionConfig], pools: list[PoolConfig], doc: dict) -> None:
        names = {p.name for p in pools}
        declared = set((doc.get("pools") or {}) if isinstance(doc.get("pools"), dict) else ())
        for c in connections:
            for name in c.pools:
                if name not in declared:
                    self.r.error(key_path(key_path("connections", c.name), "pools"),
                                 f"no [pools.{name}] section" + (f" (pools: {', '.join(sorted(names))})" if names else ""))

    def eap_secrets(self, c: ConnectionConfig, engine: EngineConfig, secrets: Secrets) -> None:
        cpath = key_path("connections", c.name)
        if c.local.auth in ("eap-mschapv2", "eap"):
            name = c.local.eap_id or c.local.id
            if name is None or secrets_mod.lookup_eap(secrets, str(name)) is None:
                where = engine.secrets or "a secrets file ([engine] secrets)"
                self.r.error(key_path(key_path(cpath, "local"), "auth"),
                             f"no [eap.*] entry with id = \"{name or '(our IKE identity)'}\" in {where}: our client "
                             "needs its EAP password there")
        if c.remote.auth in ("eap-mschapv2",) and not secrets.eap:
            where = engine.secrets or "a secrets file ([engine] secrets)"
            self.r.error(key_path(key_path(cpath, "remote"), "auth"),
                         f"no [eap.*] users in {where}: add one entry per user (id and secret)")

    def names(self, connections: list[ConnectionConfig], rules: list[RuleConfig]) -> None:
        owner: dict[str, str] = {}
        for c in connections:
            owner.setdefault(c.name, f"connection '{c.name}'")
        for c in connections:
            for ch in c.children:
                path = key_path(key_path(key_path("connections", c.name), "children"), ch.name)
                if ch.name in owner:
                    self.r.error(path, f"the name '{ch.name}' is already used by {owner[ch.name]}: child names "
                                 "must be unique (they are how a child is initiated and shown)")
                else:
                    owner[ch.name] = f"child '{ch.name}' of connection '{c.name}'"
        for rule in rules:
            if rule.name in owner:
                self.r.error(key_path("rules", rule.name), f"the name '{rule.name}' is already used by "
                             f"{owner[rule.name]}: rename the rule")

    def lab_addresses(self, engine: EngineConfig, connections: list[ConnectionConfig]) -> None:
        # The lab runs every endpoint in one process on loopback; nothing may leave the host.
        if not engine.listen:
            self.r.error("engine.listen", 'a lab listens on loopback only: set listen = ["127.0.0.1"]')
        for a in engine.listen:
            if _is_ip(a) and not ipaddress.ip_address(a).is_loopback:
                self.r.error("engine.listen", f"{a} is not a loopback address: a lab stays on 127.0.0.0/8 or ::1")
        for c in connections:
            for key in ("local_addrs", "remote_addrs"):
                for a in getattr(c, key):
                    if not _is_loopback(a):
                        self.r.error(key_path(key_path("connections", c.name), key),
                                     f"{a!r} is not a loopback address: a lab stays on 127.0.0.0/8 or ::1")

    def secrets(self, engine: EngineConfig) -> Secrets | None:
        """Load the secrets file; None when it could not be used (errors recorded)."""
        if engine.secrets is None:
            return Secrets()
        target = self.base_dir / engine.secrets
        display = engine.secrets if self.file == "<string>" else os.path.join(os.path.dirname(self.file), engine.secrets)
        if not target.is_file():
            if target.exists():  # a folder, a FIFO: "not found" sent the admin looking for a missing file
                self.r.error("engine.secrets", f"secrets file {display!r} is not a regular file")
            else:
                self.r.error("engine.secrets", f"secrets file {display!r} not found (it is relative to this file)")
            return None
        strict = self.strict_secrets_mode and engine.datapath != "lab"
        problem = secrets_mod.permission_problem(target)
        if problem and strict:
            self.r.error("engine.secrets", f"refusing secrets file {display!r}: {problem}; "
                         f"run: chmod 600 {display}")
            return None
        problem = secrets_mod.ownership_problem(target)
        if problem and strict:
            self.r.error("engine.secrets", f"refusing secrets file {display!r}: {problem.replace('FILE', display)}")
            return None
        loaded, findings = secrets_mod.load_secrets(target, display, strict=strict)
        self.extra.extend(findings)
        if any(f.severity == "error" for f in findings):
            return None
        return loaded

    def psk(self, c: ConnectionConfig, engine: EngineConfig, secrets: Secrets) -> None:
        sides = [s for s in ("local", "remote") if getattr(c, s).auth == "psk"]
        if not sides:
            return
        path = key_path(key_path(key_path("connections", c.name), sides[0]), "auth")
        if engine.secrets is None:
            self.r.error(path, 'PSK authentication needs a secrets file: set secrets = "NAME.secrets.toml" '
                         "in [engine] and add an [ike.NAME] entry to it")
            return
        local = c.local.id
        if local is None and (host := single_host(c.local_addrs)) is not None:
            local = identity_for_address(host)
        remote = c.remote.id
        if remote is None and (host := single_host(c.remote_addrs)) is not None:
            remote = identity_for_address(host)
        if not secrets_mod.secrets_for(secrets, local, remote):
            who = f"local id {local or '(our address)'}, remote id {remote or '(the peer address)'}"
            self.r.error(path, f"no [ike.*] secret in {engine.secrets} matches this connection ({who}): "
                         "add one whose ids name these identities")


    def ppk(self, c: ConnectionConfig, engine: EngineConfig, secrets: Secrets) -> None:
        if c.ppk_id is None or pq.ppk_problem(c):
            return
        if secrets_mod.lookup_ppk(secrets, c.ppk_id) is None:
            where = engine.secrets or "a secrets file ([engine] secrets)"
            self.r.error(key_path(key_path("connections", c.name), "ppk_id"),
                         f"no [ppk.*] entry with id = \"{c.ppk_id}\" in {where}: add one with a random secret "
                         "of at least 32 bytes (e.g. secret = \"0x\" followed by 'openssl rand -hex 32')")


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
