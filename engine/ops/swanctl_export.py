"""``ipsec-console export CONFIG``: a policy as a strongSwan swanctl.conf.

Every connection and child becomes its swanctl equivalent (``version = 2``,
the same keywords: proposals, traffic selectors, lifetimes and actions are
written as the policy means them, derived defaults included, so charon does
exactly what our engine does); bypass/discard rules become ``mode = pass`` /
``mode = drop`` children of one extra connection (shunts, installed when
charon loads them with ``start_action = trap``). Certificate paths are made
absolute, which swanctl accepts.

Secrets stay out of the file unless asked: with ``secrets_include`` the PSKs
and private key references go to a separate ``secrets { }`` text (written
0600 by the CLI) that the main file ``include``s. Settings swanctl has no place
for (the ``[engine]`` section, ``remote_natt_port``) are named in comments and
warnings.

Private keys and CRLs: swanctl --load-creds reads them only from the folders
of its directory (a key file named elsewhere is never loaded), a key by its
format: PKCS#8 in ``pkcs8/``, traditional RSA / EC PEM in ``rsa/`` /
``ecdsa/``, anything else in ``private/``; CRLs in ``x509crl/``. The export
names each key's secrets entry after its folder (``pkcs8-NAME { file = gw.key }``:
a passphrase is matched by the file's name there) and gives the commands that
copy the files in (:attr:`ExportResult.commands`).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from engine.ops.swanctl_conf import quote_include, render
from engine.pki.keyfiles import swanctl_key_folder
from engine.policy._reader import format_duration, format_size
from engine.policy.identity import format_identity
from engine.policy.model import ChildConfig, ConnectionConfig, EngineConfig, Policy, RuleConfig
from engine.policy.proposals import default_proposals, proposal_texts
from engine.policy.ts import TrafficSelector

_BAD_NAME = re.compile(r'[#{}:.,="\s\x00-\x1f\x7f]')
SHUNTS = "ipsec-console-rules"
"""The connection that carries the rules as shunt children."""


SWANCTL_DIR = '"${SWANCTL_DIR:-/etc/swanctl}"'
"""swanctl's directory in the copy commands (swanctl reads $SWANCTL_DIR, else its built-in /etc/swanctl)."""


@dataclass
class ExportResult:
    conf: str
    secrets_conf: str = ""
    warnings: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    """Shell commands that copy the private keys and CRLs where swanctl --load-creds reads them."""


def _comment(text: str) -> str:
    """One comment line: a line break in a file name must not end the comment."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _unique(folder: str, name: str, taken: set[tuple[str, str]]) -> str:
    """``name`` in ``folder``, or ``STEM-2.SUFFIX``, ... when a file copied earlier took it."""
    stem, dot, suffix = name.rpartition(".")
    stem, dot, suffix = (stem, dot, suffix) if dot else (name, "", "")
    n = 2
    while (folder, name) in taken:
        name, n = f"{stem}-{n}{dot}{suffix}", n + 1
    taken.add((folder, name))
    return name


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def _dur(seconds: float) -> str:
    v = format_duration(seconds)
    return v if isinstance(v, str) else f"{int(seconds)}"


def _size(n: int) -> str:
    v = format_size(n)
    return str(v)


def _ts(selectors: tuple[TrafficSelector, ...]) -> list[str]:
    return [str(t) for t in selectors]


def _proposals(proposals, protocol: str) -> list[str]:
    if not proposals or proposals == default_proposals(protocol):  # type: ignore[arg-type]
        return ["default"]
    return proposal_texts(proposals)


class _Exporter:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.base = Path(policy.path).resolve().parent if policy.path else Path.cwd()
        self.warnings: list[str] = []
        self.pool_names: dict[str, str] = {}
        self.secret_names: set[str] = set()
        self.key_files = self.place_keys()
        """Per private key name: (swanctl folder, file name there)."""

    def name(self, kind: str, name: str, taken: set[str]) -> str:
        """``name`` as a swanctl.conf section name, unique in ``taken``: swanctl's names cannot hold
        ``# { } : . , = "`` nor blanks (settings_lexer.l); a policy name may (``[connections."a.b"]``),
        and written as it is, it made a file swanctl (and our import) cannot read."""
        out = _BAD_NAME.sub("_", name) or "_"
        base, n = out, 2
        while out in taken:
            out, n = f"{base}-{n}", n + 1
        taken.add(out)
        if out != name:
            self.warnings.append(f"{kind} {name!r}: written as {out!r} (swanctl.conf names cannot contain "
                                 "# { } : . , = \" or blanks)")
        return out

    def path(self, name: str) -> str:
        return str(name if os.path.isabs(name) else (self.base / name).resolve())

    def key_path(self, name: str) -> str:
        """A key file of the secrets, which names it relative to itself (engine.pki.keys)."""
        folder = Path(self.policy.secrets.path).parent if self.policy.secrets.path else self.base
        return str(name if os.path.isabs(name) else (folder / name).resolve())

    def place_keys(self) -> dict[str, tuple[str, str]]:
        """Where each private key goes in swanctl's directory: its format's folder, its own file name
        (numbered when two keys of one folder share a name: each copy would replace the other)."""
        placed: dict[str, tuple[str, str]] = {}
        taken: set[tuple[str, str]] = set()
        for p in self.policy.secrets.private if self.policy.secrets else ():
            source = self.key_path(p.file)
            folder = swanctl_key_folder(source)
            placed[p.name] = (folder, _unique(folder, os.path.basename(source), taken))
        return placed

    def place_crls(self) -> list[tuple[str, str]]:
        """(source, file name in x509crl/) of each CRL: numbered as keys are (`pki crl` names every CA's
        CRL crl.pem: copied to one name, the second CA's replaced the first's)."""
        taken: set[tuple[str, str]] = set()
        return [(self.path(crl), _unique("x509crl", os.path.basename(crl), taken))
                for crl in self.policy.engine.crls]

    def copy_commands(self) -> list[str]:
        out = []
        for p in self.policy.secrets.private if self.policy.secrets else ():
            folder, name = self.key_files[p.name]
            out.append(f"install -m 600 {shlex.quote(self.key_path(p.file))} {SWANCTL_DIR}/{folder}/"
                       f"{shlex.quote(name)}")
        for source, name in self.place_crls():
            out.append(f"install -m 644 {shlex.quote(source)} {SWANCTL_DIR}/x509crl/{shlex.quote(name)}")
        return out

    def auth(self, side: str, c: ConnectionConfig) -> dict:
        a = c.local if side == "local" else c.remote
        out: dict = {"auth": a.auth}
        if a.id is not None:
            out["id"] = format_identity(a.id)
        if getattr(a, "eap_id", None):
            out["eap_id"] = a.eap_id
        if a.certs:
            out["certs"] = [self.path(x) for x in a.certs]
        if a.cacerts:
            out["cacerts"] = [self.path(x) for x in a.cacerts]
        if getattr(a, "revocation", "relaxed") != "relaxed":
            out["revocation"] = a.revocation
        if getattr(a, "cert_policy", ()):
            out["cert_policy"] = list(a.cert_policy)
        return out

    def child(self, k: ChildConfig) -> dict:
        out: dict = {"mode": k.mode, "local_ts": _ts(k.local_ts), "remote_ts": _ts(k.remote_ts)}
        out[f"{k.protocol}_proposals"] = _proposals(k.proposals, k.protocol)
        out.update({
            "rekey_time": _dur(k.rekey_time), "life_time": _dur(k.life_time), "rand_time": _dur(k.rand_time),
            "rekey_bytes": _size(k.rekey_bytes), "life_bytes": _size(k.life_bytes),
            "rekey_packets": _size(k.rekey_packets), "life_packets": _size(k.life_packets),
            "start_action": k.start_action, "dpd_action": k.dpd_action, "close_action": k.close_action,
            "replay_window": str(k.replay_window),
        })
        if k.priority is not None:
            out["priority"] = str(k.priority)
        return out

    def connection(self, c: ConnectionConfig, e: EngineConfig) -> dict:
        out: dict = {"version": "2"}
        if c.local_addrs:
            out["local_addrs"] = list(c.local_addrs)
        if c.remote_addrs:
            out["remote_addrs"] = list(c.remote_addrs)
        if c.local_port != 500:
            out["local_port"] = str(c.local_port)
        if c.remote_port != 500:
            out["remote_port"] = str(c.remote_port)
        if c.remote_natt_port != 4500:
            self.warnings.append(f"connections.{c.name}.remote_natt_port: swanctl has no such setting (charon "
                                 f"floats to its own NAT-T port); {c.remote_natt_port} is not exported")
        out["proposals"] = _proposals(c.proposals, "ike")
        out.update({
            "encap": _yes(c.encap), "mobike": _yes(c.mobike), "fragmentation": _yes(c.fragmentation),
            "send_certreq": _yes(c.send_certreq), "keyingtries": str(c.keyingtries),
            "dpd_delay": _dur(c.dpd_delay), "rekey_time": _dur(c.rekey_time), "over_time": _dur(c.over_time),
            "rand_time": _dur(c.rand_time),
            # Like our engine: no reauth.
            "unique": c.unique, "reauth_time": "0",
        })
        if getattr(c, "pools", ()):
            out["pools"] = [self.pool_names.get(p, p) for p in c.pools]
        if getattr(c, "vips", ()):
            out["vips"] = list(c.vips)
        if getattr(c, "ppk_id", None):
            out["ppk_id"] = c.ppk_id
            out["ppk_required"] = _yes(c.ppk_required)
        out["local"] = self.auth("local", c)
        out["remote"] = self.auth("remote", c)
        if c.children:
            taken: set[str] = set()
            out["children"] = {self.name(f"connections.{c.name}.children", k.name, taken): self.child(k)
                               for k in c.children}
        return out

    def rule(self, r: RuleConfig) -> dict:
        out: dict = {"mode": "pass" if r.action == "bypass" else "drop", "local_ts": _ts(r.local_ts),
                     "remote_ts": _ts(r.remote_ts), "start_action": "trap"}
        if r.priority is not None:
            out["priority"] = str(r.priority)
        return out

    def secrets(self) -> dict:
        out: dict = {}
        for s in self.policy.secrets.ike:
            entry: dict = {}
            for n, ident in enumerate(s.ids, 1):
                entry[f"id-{n}"] = format_identity(ident)
            raw = s.secret.reveal()
            # 0x... keeps any byte sequence exact (swanctl's own encoding).
            entry["secret"] = "0x" + raw.hex()
            out[self.name("secrets.ike", f"ike-{s.name}", self.secret_names)] = entry
        for k in getattr(self.policy.secrets, "eap", ()):
            entry = {f"id-{n}": ident for n, ident in enumerate(k.ids, 1)}
            entry["secret"] = "0x" + k.secret.reveal().hex()
            out[self.name("secrets.eap", f"eap-{k.name}", self.secret_names)] = entry
        for k in getattr(self.policy.secrets, "ppk", ()):
            out[self.name("secrets.ppk", f"ppk-{k.name}", self.secret_names)] = {
                "id": k.id, "secret": "0x" + k.secret.reveal().hex()}
        for p in self.policy.secrets.private:
            folder, name = self.key_files[p.name]
            # The file's name in its folder: swanctl matches a passphrase by it (load_creds.c).
            entry = {"file": name}
            if p.passphrase is not None:
                # swanctl takes a key's passphrase as written (no 0x/0s decoding, unlike ike/eap/ppk)
                entry["secret"] = p.passphrase.reveal().decode("utf-8", "surrogateescape")
            out[self.name("secrets.private", f"{folder}-{p.name}", self.secret_names)] = entry
        return {"secrets": out} if out else {}


def export_policy(policy: Policy, *, secrets_include: str | None = None) -> ExportResult:
    """The swanctl.conf text of ``policy``; with ``secrets_include`` (a path) also the secrets text, which
    the conf includes from that path."""
    ex = _Exporter(policy)
    e = policy.engine
    taken: set[str] = set()
    ex.pool_names = {pool.name: ex.name("pools", pool.name, taken) for pool in getattr(policy, "pools", ())}
    taken = set()
    conns = {ex.name("connections", c.name, taken): ex.connection(c, e) for c in policy.connections}
    pools = {}
    for pool in getattr(policy, "pools", ()):
        entry: dict = {"addrs": pool.addrs}
        if pool.dns:
            entry["dns"] = list(pool.dns)
        if pool.split_include:
            entry["subnet"] = list(pool.split_include)  # INTERNAL_IP4/6_SUBNET
        if pool.split_exclude:
            entry["split_exclude"] = list(pool.split_exclude)
        pools[ex.pool_names[pool.name]] = entry
    if policy.rules:
        name = SHUNTS
        while name in conns:
            name += "-x"
        taken = set()
        conns[name] = {"children": {ex.name("rules", r.name, taken): ex.rule(r) for r in policy.rules}}
    header = [f"# swanctl.conf written by ipsec-console export from {policy.path or 'a policy'}.",
              "# Load it with: swanctl --load-all --file THIS_FILE"]
    if (e.ike_port, e.natt_port) != (500, 4500):
        header.append(f"# The engine listened on ports {e.ike_port}/{e.natt_port}: set charon.port = {e.ike_port} "
                      f"and charon.port_nat_t = {e.natt_port} in strongswan.conf to match.")
        ex.warnings.append(f"[engine] ike_port/natt_port {e.ike_port}/{e.natt_port}: set charon.port and "
                           "charon.port_nat_t in strongswan.conf (swanctl.conf has no place for them)")
    text = "\n".join(header) + "\n\n" + (render({"connections": conns}) if conns else "")
    if pools:
        text += "\n" + render({"pools": pools})
    result = ExportResult(conf=text, warnings=ex.warnings, commands=ex.copy_commands())
    for p in policy.secrets.private if policy.secrets else ():
        folder, name = ex.key_files[p.name]
        ex.warnings.append(f"secrets.private.{p.name}: swanctl --load-creds reads private keys from its own "
                           f"folders only: copy {ex.key_path(p.file)} to {folder}/{name} there (commands below)")
    for crl in e.crls:
        ex.warnings.append(f"[engine] crls {crl}: swanctl.conf names no CRL files; swanctl --load-creds reads "
                           "them from its x509crl/ folder: copy it there (commands below)")
    if result.commands:
        result.conf += ("\n# swanctl --load-creds reads private keys and CRLs only from its folders; copy them "
                        "there:\n" + "".join(f"#   {_comment(c)}\n" for c in result.commands))
    has_secrets = bool(policy.secrets.ike or policy.secrets.private or getattr(policy.secrets, "ppk", ())
                       or getattr(policy.secrets, "eap", ()))
    if secrets_include:
        result.secrets_conf = ("# Secrets for the swanctl.conf of ipsec-console export. Keep this file mode 0600.\n\n"
                               + render(ex.secrets()))
        result.conf += f"\ninclude {quote_include(secrets_include)}\n"  # a path with blanks is quoted
    elif has_secrets:
        result.conf += ("\n# The policy's secrets were not exported: rerun with --secrets FILE to write them to a "
                        "separate file (mode 0600) that this one includes.\n")
    return result
