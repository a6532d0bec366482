"""Checks across a policy's sections once each is read: pool references, names, lab addresses,
and the secrets each connection needs (PSK, PPK, EAP). A mixin of parse._PolicyParser."""

from __future__ import annotations

import ipaddress
import os

from engine.policy import secrets as secrets_mod
from engine.policy._reader import key_path
from engine.policy.identity import identity_for_address
from engine.policy.model import ConnectionConfig, EngineConfig, PoolConfig, RuleConfig, Secrets
from engine.policy import pq

from engine.policy.parse_common import (_is_ip, _is_loopback, single_host)


class CrossChecks:
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
