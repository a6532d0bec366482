"""``ipsec-console import swanctl.conf``: a strongSwan configuration as a policy
and a secrets file.

What carries over: connections (addresses, ports, IKE proposals, local/remote
authentication with ``psk``, public keys, EAP-MSCHAPv2, EAP-TLS or ``eap`` and
``eap_id``, identities, certificates and CA certificates, DPD, encapsulation,
MOBIKE, fragmentation, lifetimes, keyingtries, pools and vips), their children
(mode, traffic selectors, ESP/AH proposals, lifetimes, actions, replay window,
priority), ``mode = pass|drop`` children as bypass/discard rules, pools, and the
``ike``/``private``/``ppk``/``eap`` secrets. Everything else (other EAP methods,
XAuth, IKEv1, marks, interfaces, updown scripts, ...) has no equivalent here:
each such key gets one warning ``FILE:LINE: KEY.PATH: not imported: why``, and a
connection that cannot work without it (EAP-MD5, IKEv1) is left out whole, with
a warning.

Certificate file names are resolved as swanctl does (``x509/``, ``x509ca/``,
``private/`` beside the swanctl.conf unless absolute) and written relative to
the new policy's folder; the CRLs of ``x509crl/`` (swanctl --load-creds loads
them all) become ``[engine] crls``. The result is validated with the policy parser.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from engine.ops.swanctl_conf import Section, SettingsError, parse, parse_file
from engine.ops.swanctl_secrets import MAX_KEY_FILES, SecretsImport
from engine.pki.keyfiles import is_crl_file
from engine.policy._reader import parse_duration, parse_size
from engine.policy.findings import PolicyError
from engine.policy.identity import IdentityError, parse_identity
from engine.policy.parse import PRIORITY_MAX, REPLAY_WINDOW_MAX, address_kind, parse_policy
from engine.policy.serialize import document_text
from engine.policy.proposals import ProposalError, parse_proposal
from engine.policy.ts import TsSyntaxError, parse_ts


class SwanctlError(Exception):
    """The file could not be read or is not in swanctl.conf's syntax."""


CONN_DIRECT = {
    "local_addrs": "addrs", "remote_addrs": "addrs", "local_port": "port", "remote_port": "port",
    "proposals": "ike_proposals", "encap": "bool", "mobike": "bool", "dpd_delay": "duration",
    "rekey_time": "duration", "over_time": "duration", "rand_time": "duration", "send_certreq": "bool",
    "keyingtries": "keyingtries", "fragmentation": "fragmentation", "ppk_id": "string", "ppk_required": "bool",
    "vips": "names", "pools": "names",
}
INT_RANGES = {"port": (1, 65535), "keyingtries": (0, 2**32 - 1), "replay_window": (0, REPLAY_WINDOW_MAX)}
"""Whole-number settings and what the policy takes (keyingtries: swanctl's u_int32): a value outside
is a warning and the setting is left out, never an import that fails validation."""
NATT_PORT = 4500
"""The engine's natt_port as imported (the default): swanctl's ``local_port = 4500`` is IKE on it."""
MAX_DURATION = 2**32 - 1
"""Seconds: swanctl's lifetimes are 32-bit (and a longer one is no limit)."""
MAX_SIZE = 2**63 - 1
"""Bytes and packets: what a TOML integer holds."""
POOL_KEYS = {"addrs": "string", "dns": "names", "subnet": "names", "split_exclude": "names"}
"""swanctl pool attributes we keep: ``subnet`` (INTERNAL_IP4/6_SUBNET) is our ``split_include``."""
CONN_IGNORED = {
    "version": None,  # checked separately
    "dpd_timeout": "IKEv1 only",
    "unique": "not one of swanctl's no, never, keep, replace: left at \"no\"",
    "reauth_time": "reauthentication is not implemented (rekeying is)",
    "aggressive": "IKEv1 only",
    "pull": "IKEv1 mode config only",
    "send_cert": "certificates are always sent when authenticating with one",
}
CONN_SAME = {("unique", "no"), ("reauth_time", "0"), ("reauth_time", "0s"), ("version", "2")}
"""Settings whose value is this engine's behaviour: nothing to warn about."""
CHILD_DIRECT = {
    "local_ts": "ts", "remote_ts": "ts", "esp_proposals": "esp_proposals", "ah_proposals": "ah_proposals",
    "rekey_time": "duration", "life_time": "duration", "rand_time": "duration", "rekey_bytes": "size",
    "life_bytes": "size", "rekey_packets": "size", "life_packets": "size", "start_action": "start_action",
    "dpd_action": "dpd_action", "close_action": "close_action", "replay_window": "replay_window",
    "priority": "priority",
}
AUTH_DIRECT = {"auth": "auth", "id": "id", "certs": "certs", "cacerts": "cacerts", "eap_id": "eap_id",
               "revocation": "revocation", "cert_policy": "cert_policy"}
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
EAP_AUTH = ("eap-mschapv2", "eap-tls", "eap")
"""The EAP methods engine.ike negotiates (swanctl's names)."""
_TRUE = ("yes", "true", "enabled", "1", "on")
_FALSE = ("no", "false", "disabled", "0", "off")
_NAME = re.compile(r"^[^\s\x00-\x1f\x7f]{1,64}$")


@dataclass
class ImportResult:
    policy_toml: str
    secrets_toml: str
    warnings: list[str] = field(default_factory=list)
    connections: int = 0
    children: int = 0
    rules: int = 0
    secrets: int = 0
    skipped: int = 0
    """Connections left out (IKEv1, EAP, ...)."""
    errors: list[str] = field(default_factory=list)
    """Findings of validating the result (empty: the policy loads)."""

    @property
    def counts(self) -> str:
        return (f"{self.connections} connections, {self.children} children, {self.rules} rules, "
                f"{self.secrets} secrets" + (f", {self.skipped} connections left out" if self.skipped else ""))


class _Importer(SecretsImport):
    def __init__(self, root: Section, conf_dir: Path, out_dir: Path, secrets_name: str = "secrets.toml") -> None:
        self.root = root
        self.conf_dir = conf_dir
        self.out_dir = out_dir
        self.secrets_dir = Path(os.path.normpath(out_dir / secrets_name)).parent
        """Key files are relative to the secrets file (engine.pki.keys), which may be elsewhere."""
        self.init_secrets()
        self.warnings: list[str] = list(root.notes)
        self.used_names: set[str] = set()
        self.ports: dict[int, list[tuple[str, str]]] = {}
        """local_port values other than 500, and where: one of them becomes [engine] ike_port."""
        self.result = ImportResult("", "")

    def warn(self, where: str, path: str, why: str) -> None:
        self.warnings.append(f"{where}: {path}: not imported: {why}")

    # -- values ---------------------------------------------------------------------------------
    @staticmethod
    def split(value: str) -> list[str]:
        return [v.strip() for v in value.split(",") if v.strip()]

    def file_ref(self, name: str, folder: str) -> str:
        path = Path(name) if os.path.isabs(name) else self.conf_dir / folder / name
        return os.path.relpath(path, self.out_dir)

    def convert(self, kind: str, value: str, where: str, path: str):
        """Our TOML value for a swanctl value of ``kind``; None (with a warning) when it has none."""
        v = value.strip()
        try:
            if kind == "addrs":
                out = []
                for a in self.split(v):
                    if address_kind(a) is None:
                        self.warn(where, path, f"{a!r} is not an address, network, range or name we support")
                    else:
                        out.append(a)
                return out or None
            if kind == "string":
                return v
            if kind == "names":
                return self.split(v) or None
            if kind in INT_RANGES:
                n = int(v)
                lo, hi = INT_RANGES[kind]
                if not lo <= n <= hi:
                    self.warn(where, path, f"value {v!r} is out of range ({lo} to {hi})")
                    return None
                return n
            if kind == "bool":
                if v.lower() in _TRUE:
                    return True
                if v.lower() in _FALSE:
                    return False
                raise ValueError
            if kind == "fragmentation":
                if v.lower() == "force":
                    self.warn(where, path, "'force' (fragment IKE_SA_INIT too): imported as yes")
                return v.lower() in _TRUE + ("accept", "force")
            if kind == "duration":
                if parse_duration(int(v) if v.isdigit() else v) > MAX_DURATION:
                    self.warn(where, path, f"value {v!r} is out of range (at most {MAX_DURATION} seconds)")
                    return None
                return v if not v.isdigit() else int(v)
            if kind == "size":
                if parse_size(v.lower() if v[-1:] in "KMG" else v) > MAX_SIZE:
                    self.warn(where, path, f"value {v!r} is out of range (at most {MAX_SIZE})")
                    return None
                return v if not v.isdigit() else int(v)
            if kind == "priority":
                n = int(v)
                if n == 0:
                    return None  # swanctl's default: computed
                if not 1 <= n <= PRIORITY_MAX:
                    self.warn(where, path, f"value {v!r} is out of range (1 to {PRIORITY_MAX}, or 0: computed)")
                    return None
                return n
            if kind in ("ike_proposals", "esp_proposals", "ah_proposals"):
                protocol = kind.split("_")[0]
                out = []
                for p in self.split(v):
                    if p.lower() == "default":
                        out.append("default")
                        continue
                    try:
                        parse_proposal(p, protocol)  # type: ignore[arg-type]
                        out.append(p)
                    except ProposalError as exc:
                        self.warn(where, path, f"proposal {p!r}: {exc}")
                return out or None
            if kind == "ts":
                out = []
                for t in self.split(v):
                    try:
                        parse_ts(t)
                        out.append(t)
                    except TsSyntaxError as exc:
                        self.warn(where, path, f"traffic selector {t!r}: {exc}")
                return out or None
            if kind in ("start_action", "close_action"):
                actions = [a.strip() for a in v.split("|")]
                if len(actions) > 1:
                    self.warn(where, path, f"{v!r}: one action only here; imported as {actions[-1]!r}")
                a = {"route": "trap", "hold": "trap", "restart": "start", "clear": "none"}.get(actions[-1],
                                                                                             actions[-1])
                if a not in ("none", "trap", "start"):
                    raise ValueError
                return a
            if kind == "dpd_action":
                a = {"hold": "trap", "route": "trap", "none": "clear"}.get(v, v)
                if a not in ("clear", "trap", "restart"):
                    raise ValueError
                return a
        except (ValueError, IndexError, OverflowError):  # OverflowError: digits past a float's range
            self.warn(where, path, f"value {v!r} is not understood")
            return None
        raise AssertionError(kind)

    # -- sections -------------------------------------------------------------------------------
    def unique_name(self, name: str, fallback: str, where: str, path: str) -> str:
        candidate = name if _NAME.match(name) else re.sub(r"\s+", "-", name)[:64] or fallback
        if candidate in self.used_names:
            renamed = fallback
            n = 2
            while renamed in self.used_names:
                renamed = f"{fallback}-{n}"
                n += 1
            self.warnings.append(f"{where}: {path}: renamed to {renamed!r} (names of connections, children and "
                                 "rules must be unique here)")
            candidate = renamed
        self.used_names.add(candidate)
        return candidate

    def round_number(self, section: Section, path: str) -> int:
        """A ``round`` setting (the order of authentication rounds); a bad one is 0, with a warning."""
        value = (section.value("round") or "0").strip()
        try:
            return int(value)
        except ValueError:
            self.warn(section.where("round"), f"{path}.round", f"value {value!r} is not understood: taken as 0")
            return 0

    def auth_round(self, conn: Section, side: str, cpath: str) -> tuple[dict | None, str | None]:
        """Our local/remote table from the first ``local*``/``remote*`` round; (None, reason) if unusable."""
        rounds = sorted((s for n, s in conn.sections.items() if n == side or n.startswith(side)),
                        key=lambda s: (self.round_number(s, f"{cpath}.{s.name}"), s.name))
        if not rounds:
            return {}, None
        first, rest = rounds[0], rounds[1:]
        for extra in rest:
            self.warn(extra.where(), f"{cpath}.{extra.name}", "a second authentication round is not implemented")
        out: dict = {}
        p = f"{cpath}.{first.name}"
        auth = (first.value("auth") or "pubkey").lower()
        if auth in EAP_AUTH:
            out["auth"] = auth
            if first.value("eap_id") is not None:
                out["eap_id"] = first.value("eap_id")
        elif auth.startswith(("eap", "xauth")):
            return None, (f"{side} authentication {auth!r} is not implemented (EAP-MSCHAPv2, EAP-TLS and "
                          "\"eap\" are)")
        elif auth in ("psk", "secret"):
            out["auth"] = "psk"
        elif auth.startswith(("pubkey", "rsa", "ecdsa", "ed25519", "ed448", "bliss")):
            out["auth"] = "pubkey"
            if auth not in ("pubkey",):
                self.warn(first.where("auth"), f"{p}.auth", f"{auth!r}: imported as 'pubkey' (any key type and "
                          "signature scheme the certificate allows)")
        else:
            return None, f"{side} authentication {auth!r} is not implemented"
        ident = first.value("id")
        if ident is not None:
            try:
                parsed = parse_identity(ident)
                if side == "local" and parsed.kind == "any":
                    self.warn(first.where("id"), f"{p}.id", "%any as our own identity: left out (our address is "
                              "used)")
                else:
                    out["id"] = ident
            except IdentityError as exc:
                self.warn(first.where("id"), f"{p}.id", f"{ident!r}: {exc}")
        if first.value("certs"):
            out["certs"] = [self.file_ref(c, "x509") for c in self.split(first.value("certs"))]
        if first.value("cacerts"):
            out["cacerts"] = [self.file_ref(c, "x509ca") for c in self.split(first.value("cacerts"))]
        for name, sub in first.sections.items():  # cert<suffix> { file = ... } / cacert<suffix>
            f = sub.value("file")
            if name.startswith("cacert") and f:
                out.setdefault("cacerts", []).append(self.file_ref(f, "x509ca"))
            elif name.startswith("cert") and f:
                out.setdefault("certs", []).append(self.file_ref(f, "x509"))
            else:
                self.warn(sub.where(), f"{p}.{name}", "only cert/cacert sections with a file are imported")
        revocation = first.value("revocation")
        if revocation is not None:
            if side == "remote" and out["auth"] != "psk" and out["auth"] != "eap-mschapv2" \
                    and revocation.strip().lower() in ("strict", "ifuri"):
                out["revocation"] = revocation.strip().lower()
            elif revocation.strip().lower() != "relaxed":
                self.warn(first.where("revocation"), f"{p}.revocation", f"{revocation!r}: left out (strict, ifuri and "
                          "relaxed are read on the remote side, with certificate authentication)")
        cert_policy = first.value("cert_policy")
        if cert_policy is not None:
            oids = self.split(cert_policy)
            bad = [o for o in oids if not (_OID.fullmatch(o) and len(o) <= 200)]
            if side == "local" and oids:
                self.warn(first.where("cert_policy"), f"{p}.cert_policy", f"{cert_policy!r}: left out (cert_policy "
                          "is read on the remote side)")
            elif oids and (bad or out["auth"] != "pubkey"):
                # charon refuses every peer whose certificate lacks one of these (a name that is no dotted
                # OID never matches, nor does a round without policies): dropping the setting alone would
                # accept any certificate of the CA, so the connection goes whole
                return None, (f"remote cert_policy {cert_policy!r}: " + (
                    f"{', '.join(map(repr, bad))} is not a dotted OID" if bad
                    else f"checked here only with auth = pubkey (auth is {out['auth']!r})"))
            elif oids:
                out["cert_policy"] = oids
        if side == "local":  # each of our certificates needs its private key (SecretsImport.folder_keys)
            self.local_certs.extend((Path(os.path.normpath(self.out_dir / c)), first.where(), f"{p}.certs")
                                    for c in out.get("certs", ()))
        for key in first.settings:
            if key not in AUTH_DIRECT and key != "round":
                self.warn(first.where(key), f"{p}.{key}", "not implemented")
        if out["auth"] == "pubkey" and side == "local" and not out.get("certs"):
            return None, "public key authentication without local certs (a raw public key is not supported)"
        return out, None

    def connection(self, name: str, conn: Section, doc: dict) -> None:
        cpath = f"connections.{name}"
        version = conn.value("version") or "0"
        if version == "1":
            self.warn(conn.where("version"), cpath, "IKEv1 is not implemented: connection left out")
            self.result.skipped += 1
            return
        if version not in ("0", "2"):
            self.warn(conn.where("version"), f"{cpath}.version", f"{version!r} is not an IKE version")
        kids = conn.section("children").sections if conn.section("children") else {}
        if kids and all((k.value("mode") or "").lower() in ("pass", "drop") for k in kids.values()):
            # Only shunts (strongSwan installs them without any IKE): they become rules, no connection.
            addrs = {k: self.convert("addrs", conn.value(k), conn.where(k), f"{cpath}.{k}")
                     for k in ("local_addrs", "remote_addrs") if conn.value(k)}
            for kname, child in kids.items():
                self.child(name, addrs, kname, child, f"{cpath}.children.{kname}", {}, doc)
            return
        certs_before = len(self.local_certs)
        local, why = self.auth_round(conn, "local", cpath)
        remote, why2 = self.auth_round(conn, "remote", cpath) if why is None else (None, None)
        if why or why2:
            del self.local_certs[certs_before:]  # no key is looked for a connection left out
            self.warn(conn.where(), cpath, f"{why or why2}: connection left out")
            self.result.skipped += 1
            return
        ours = self.unique_name(name, f"conn-{len(doc['connections']) + 1}", conn.where(), cpath)
        out: dict = {}
        for key, setting in conn.settings.items():
            if key == "unique" and setting.value.strip().lower() in ("never", "replace", "keep"):
                out[key] = setting.value.strip().lower()
                continue
            kind = CONN_DIRECT.get(key)
            if kind is not None:
                value = self.convert(kind, setting.value, f"{setting.file}:{setting.line}", f"{cpath}.{key}")
                if value is not None:
                    out[key] = value
            elif key in CONN_IGNORED:
                if (key, setting.value.strip().lower()) in CONN_SAME:
                    continue  # what ipsec-console does anyway
                if CONN_IGNORED[key]:
                    self.warn(f"{setting.file}:{setting.line}", f"{cpath}.{key}", CONN_IGNORED[key])
            else:
                self.warn(f"{setting.file}:{setting.line}", f"{cpath}.{key}", "not implemented")
        port = out.pop("local_port", 500)
        if port == NATT_PORT:
            # charon then starts IKE on its NAT-T socket (non-ESP marker, RFC 3948): a connection's
            # local_port equal to the engine's natt_port does the same; the gateway keeps 500 for others.
            out["local_port"] = port
        elif port != 500:
            ports = self.ports.setdefault(port, [])
            ports.append((conn.where("local_port"), f"{cpath}.local_port"))
        local.setdefault("auth", "pubkey")
        remote.setdefault("auth", "pubkey")
        out["local"], out["remote"] = local, remote
        for sname, sub in conn.sections.items():
            if sname.startswith(("local", "remote")):
                continue
            if sname != "children":
                self.warn(sub.where(), f"{cpath}.{sname}", "not implemented")
        children: dict = {}
        for kname, child in (conn.section("children").sections.items() if conn.section("children") else ()):
            self.child(ours, out, kname, child, f"{cpath}.children.{kname}", children, doc)
        if children:
            out["children"] = children
        doc["connections"][ours] = out
        self.result.connections += 1

    def child(self, conn_name: str, conn: dict, name: str, child: Section, kpath: str, children: dict,
              doc: dict) -> None:
        mode = (child.value("mode") or "tunnel").lower()
        out: dict = {}
        for key, setting in child.settings.items():
            where = f"{setting.file}:{setting.line}"
            if key == "mode":
                if mode not in ("tunnel", "transport", "pass", "drop"):
                    self.warn(where, f"{kpath}.mode", f"{mode!r} is not implemented; imported as tunnel")
                    mode = "tunnel"
                continue
            kind = CHILD_DIRECT.get(key)
            if kind is None:
                self.warn(where, f"{kpath}.{key}", "not implemented")
                continue
            value = self.convert(kind, setting.value, where, f"{kpath}.{key}")
            if value is not None:
                out[key] = value
        for sname, sub in child.sections.items():
            self.warn(sub.where(), f"{kpath}.{sname}", "not implemented")
        if mode in ("pass", "drop"):
            rule: dict = {"action": "bypass" if mode == "pass" else "discard"}
            for side in ("local_ts", "remote_ts"):
                ts = [t for t in out.get(side, []) if not t.startswith("dynamic")]
                if len(ts) != len(out.get(side, [])):
                    addrs = conn.get("local_addrs" if side == "local_ts" else "remote_addrs") or []
                    if len(addrs) == 1 and address_kind(addrs[0]) == "ip":
                        ts.append(addrs[0])
                    else:
                        self.warn(child.where(side), f"{kpath}.{side}", "'dynamic' in a shunt needs one address "
                                  "in the connection's addrs; left out")
                if ts:
                    rule[side] = ts
            if "priority" in out:
                rule["priority"] = out["priority"]
            ours = self.unique_name(name, f"{conn_name}-{name}", child.where(), kpath)
            doc["rules"][ours] = rule
            self.result.rules += 1
            return
        if mode == "transport":
            out["mode"] = "transport"
        if "ah_proposals" in out and "esp_proposals" not in out:
            out["protocol"] = "ah"
        elif "ah_proposals" in out:
            self.warn(child.where("ah_proposals"), f"{kpath}.ah_proposals", "AH together with ESP is not "
                      "implemented: ESP only")
            out.pop("ah_proposals")
        ours = self.unique_name(name, f"{name}-child" if name == conn_name else f"{conn_name}-{name}", child.where(),
                                kpath)
        children[ours] = out
        self.result.children += 1

    def pool(self, name: str, pool: Section, doc: dict) -> None:
        path = f"pools.{name}"
        out: dict = {}
        for key, setting in pool.settings.items():
            where = f"{setting.file}:{setting.line}"
            kind = POOL_KEYS.get(key)
            if kind is None:
                self.warn(where, f"{path}.{key}", "not implemented (addrs, dns, subnet and split_exclude are)")
                continue
            value = self.convert(kind, setting.value, where, f"{path}.{key}")
            if value is not None:
                out["split_include" if key == "subnet" else key] = value
        if "addrs" not in out:
            self.warn(pool.where(), path, "a pool without addrs (a single address list or DHCP) is not implemented")
            return
        doc["pools"][name] = out

    def folder_crls(self, doc: dict) -> None:
        """swanctl --load-creds loads every CRL file of its x509crl/ folder (export copies [engine] crls
        there): they become [engine] crls, else a round trip lost every revocation."""
        d = self.conf_dir / "x509crl"
        if not d.is_dir():
            return
        try:
            files = [f for f in sorted(d.iterdir())[:MAX_KEY_FILES] if f.is_file()]
        except OSError:
            return
        crls = [f for f in files if is_crl_file(f)]
        if crls:
            doc["engine"]["crls"] = [os.path.relpath(f, self.out_dir) for f in crls]
            self.warnings.append(f"{d}: [engine] crls: the CRL files swanctl --load-creds loads from x509crl/ "
                                 f"({', '.join(f.name for f in crls)})")
        for f in files:
            if f not in crls:  # strongSwan skips it too (with a log line); the engine would not start
                self.warnings.append(f"{f}: not a CRL (or larger than 16 MB): left out of [engine] crls")

    def run(self, datapath: str, secrets_name: str) -> tuple[dict, dict]:
        doc: dict = {"engine": {"datapath": datapath, "secrets": secrets_name}, "pools": {}, "connections": {},
                     "rules": {}}
        secrets: dict = {"ike": {}, "private": {}, "ppk": {}, "eap": {}}
        for name, sec in self.root.sections.items():
            if name == "connections":
                for cname, conn in sec.sections.items():
                    self.connection(cname, conn, doc)
                for key in sec.settings:
                    self.warn(sec.where(key), f"connections.{key}", "a setting outside any connection")
            elif name == "secrets":
                self.secrets(sec, secrets)
            elif name == "pools":
                for pname, pool in sec.sections.items():
                    self.pool(pname, pool, doc)
            elif name == "authorities":
                for sub in sec.sections:
                    self.warn(sec.sections[sub].where(), f"{name}.{sub}", "authorities (CRL/OCSP URIs) are not "
                              "implemented: list CRL files in [engine] crls")
            else:
                self.warn(sec.where(), name, "not a swanctl.conf section")
        self.folder_keys(secrets)
        self.folder_crls(doc)
        for key in self.root.settings:
            self.warn(self.root.where(key), key, "a setting outside any section")
        if self.ports:
            # Connections share the engine's ports here: the most used local_port becomes ike_port.
            port = max(self.ports, key=lambda p: len(self.ports[p]))
            doc["engine"]["ike_port"] = port
            where, path = self.ports[port][0]
            moved = f"[engine] ike_port = {port}: the whole gateway listens for IKE there, not on 500"
            self.warnings.append(f"{where}: {path}: {moved}")  # imported, with a consequence to know
            for other, places in self.ports.items():
                if other != port:
                    for where, path in places:
                        self.warn(where, path, f"connections share [engine] ike_port ({port}) here")
        for k in ("pools", "connections", "rules"):
            if not doc[k]:
                del doc[k]
        for k in ("ike", "private", "ppk", "eap"):
            if not secrets[k]:
                del secrets[k]
        return doc, secrets


HEADER = "# Imported by ipsec-console from {src}: check it with `ipsec-console check`.\n\n"
SECRETS_HEADER = "# Secrets imported by ipsec-console from {src}. Keep this file mode 0600.\n\n"


def import_tree(root: Section, *, source: str, conf_dir: Path, out_dir: Path | None = None,
                secrets_name: str = "secrets.toml", datapath: str = "kernel",
                policy_name: str = "imported.toml") -> ImportResult:
    """Convert a parsed swanctl.conf; the result is validated (``errors``, naming the policy
    ``policy_name`` and the secrets file ``secrets_name``) but nothing is written."""
    out_dir = out_dir or Path.cwd()
    imp = _Importer(root, conf_dir, out_dir, secrets_name)
    doc, secrets = imp.run(datapath, secrets_name)
    result = imp.result
    result.warnings = imp.warnings
    result.policy_toml = HEADER.format(src=source) + document_text(doc)
    result.secrets_toml = SECRETS_HEADER.format(src=source) + document_text(secrets)
    check_doc = {**doc, "engine": {**doc["engine"], "secrets": SCRATCH_SECRETS}}
    result.errors = validate(result, out_dir, secrets_name, document_text(check_doc), policy_name)
    return result


SCRATCH_SECRETS = "imported.secrets.toml"
"""The secrets file's name in the validation scratch folder: never the real name, which may climb
out of the folder with ``..`` (a secrets file elsewhere in the tree than the policy)."""


def validate(result: ImportResult, out_dir: Path, secrets_name: str, policy_text: str,
             policy_name: str = "imported.toml") -> list[str]:
    """Load the policy with its secrets, as the engine would, from a scratch folder: ``policy_text`` is
    the policy naming the secrets file :data:`SCRATCH_SECRETS`; findings name ``secrets_name``."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "policy"
        scratch.mkdir()
        secrets = scratch / SCRATCH_SECRETS
        fd = os.open(secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(result.secrets_toml)
        try:
            parse_policy(policy_text, scratch / "imported.toml", strict_secrets_mode=True)
        except PolicyError as exc:
            policy = str(scratch / "imported.toml")
            return [f.format().replace(str(secrets), secrets_name).replace(policy, policy_name)
                    .replace(str(scratch) + "/", "").replace(SCRATCH_SECRETS, secrets_name) for f in exc.errors]
    return []


def import_text(text: str, *, source: str = "<string>", conf_dir: Path | None = None, **kw) -> ImportResult:
    try:
        root = parse(text, source, conf_dir)
    except SettingsError as exc:
        raise SwanctlError(str(exc)) from None
    return import_tree(root, source=source, conf_dir=conf_dir or Path.cwd(), **kw)


def import_file(path: str | os.PathLike, **kw) -> ImportResult:
    path = Path(path)
    try:
        root = parse_file(path)
    except SettingsError as exc:
        raise SwanctlError(str(exc)) from None
    return import_tree(root, source=str(path), conf_dir=path.resolve().parent, **kw)
