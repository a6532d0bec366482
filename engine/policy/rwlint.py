"""Lint rules for road-warrior gateways (issue 10): pools, EAP, and what Windows clients offer.

Rules: pool-overlap, pool-too-small, eap-without-certificate, windows-weak-proposals.
``engine.policy.lint`` runs them with its ``warn``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from engine.crypto.transforms import EncrId, IntegId, KeId, PrfId
from engine.policy._reader import key_path
from engine.policy.model import ConnectionConfig, Policy
from engine.pools import pool_range, pool_size

Warn = Callable[[str, str, str], None]
"""warn(key path, rule, message)."""

RULES = ("pool-overlap", "pool-too-small", "eap-without-certificate", "windows-weak-proposals")

WINDOWS_POWERSHELL = ("Set-VpnConnectionIPsecConfiguration -ConnectionName <name> -EncryptionMethod AES256 "
                      "-IntegrityCheckMethod SHA256 -DHGroup ECP384 -CipherTransformConstants GCMAES256 "
                      "-AuthenticationTransformConstants GCMAES256 -PfsGroup ECP384")
"""The stronger settings Windows' built-in IKEv2 client can be told to use (its defaults are
3DES, SHA-1 and DH group 2, i.e. MODP-1024)."""
WINDOWS_PROPOSALS = ('proposals = ["aes256-sha256-ecp384"]', 'esp_proposals = ["aes256gcm16-ecp384"]')


def _pool_networks(addrs: str) -> list:
    first, last = pool_range(addrs)
    return list(ipaddress.summarize_address_range(first, last))


def _local_networks(policy: Policy) -> list[tuple[str, object]]:
    """(what, network) of everything local: listen addresses, local_addrs, children's local_ts."""
    out: list[tuple[str, object]] = []
    for a in policy.engine.listen:
        out.append(("listen address " + a, ipaddress.ip_network(a)))
    for c in policy.connections:
        for a in c.local_addrs:
            try:
                out.append((f"local_addrs of '{c.name}'", ipaddress.ip_network(a.strip(), strict=False)))
            except ValueError:
                pass
        for ch in c.children:
            for ts in ch.local_ts:
                if ts.dynamic or (int(ts.end) - int(ts.start) == (1 << ts.start.max_prefixlen) - 1):
                    continue  # "dynamic", or everything (a full tunnel's local side overlaps by design)
                for net in ipaddress.summarize_address_range(ts.start, ts.end):
                    out.append((f"local_ts of '{c.name}.{ch.name}'", net))
    return out


def pools(policy: Policy, warn: Warn) -> None:
    local = _local_networks(policy)
    seen: list[tuple[str, list]] = []
    for p in policy.pools:
        path = key_path(key_path("pools", p.name), "addrs")
        nets = _pool_networks(p.addrs)
        for what, net in local:
            if any(n.version == net.version and n.overlaps(net) for n in nets):
                warn(path, "pool-overlap", f"pool {p.addrs} overlaps the {what} ({net}): clients would get "
                     "addresses the gateway or its LAN already use; take the pool from a range routed to "
                     "this gateway and used nowhere else")
                break
        for other, onets in seen:
            if any(a.version == b.version and a.overlaps(b) for a in nets for b in onets):
                warn(path, "pool-overlap", f"pool '{p.name}' overlaps pool '{other}': one address could be "
                     "leased twice")
        seen.append((p.name, nets))
    for c in policy.connections:
        if not c.expected_clients or not c.pools:
            continue
        by_family: dict[int, int] = {}
        for name in c.pools:
            try:
                cfg = policy.pool(name)
            except KeyError:
                continue
            version = pool_range(cfg.addrs)[0].version
            by_family[version] = by_family.get(version, 0) + pool_size(cfg.addrs)
        for version, size in sorted(by_family.items()):
            if size < c.expected_clients:
                warn(key_path(key_path("connections", c.name), "pools"), "pool-too-small",
                     f"its IPv{version} pools hold {size} addresses for {c.expected_clients} expected clients: "
                     "the others would be refused (INTERNAL_ADDRESS_FAILURE); enlarge the pool or add one")


def eap_without_certificate(c: ConnectionConfig, warn: Warn) -> None:
    if c.remote.is_eap and c.local.auth != "pubkey":
        warn(key_path(key_path(key_path("connections", c.name), "local"), "auth"), "eap-without-certificate",
             f'clients authenticate with {c.remote.auth} but the gateway with "{c.local.auth}": RFC 7296 §2.16 '
             "wants EAP paired with a gateway certificate (clients check it before they send their password); "
             'use local.auth = "pubkey" with certs')


def _weak_for_windows(c: ConnectionConfig) -> list[str]:
    hits = []
    for p in c.proposals:
        if p.text.lower() == "default":
            continue
        if any(t.id == EncrId.TRIPLE_DES for t in p.encr):
            hits.append("3DES")
        if any(t.id == IntegId.HMAC_SHA1_96 for t in p.integ) or any(t.id == PrfId.HMAC_SHA1 for t in p.prf):
            hits.append("SHA-1")
        if any(t.id == KeId.MODP_1024 for t in p.ke):
            hits.append("MODP-1024")
    return list(dict.fromkeys(hits))


def windows_weak_proposals(c: ConnectionConfig, warn: Warn) -> None:
    """A gateway for clients (pools, EAP or %any) that accepts what Windows offers by default."""
    gateway = bool(c.pools) or c.remote.is_eap or not c.remote_addrs or "%any" in c.remote_addrs
    hits = _weak_for_windows(c)
    if not gateway or "MODP-1024" not in hits:
        return
    warn(key_path(key_path("connections", c.name), "proposals"), "windows-weak-proposals",
         f"accepts {'/'.join(hits)}, which is what Windows' built-in client offers by default; rather than "
         f"weaken the gateway, tell the clients to use stronger algorithms ({WINDOWS_POWERSHELL}) and accept "
         f"those: {', '.join(WINDOWS_PROPOSALS)} (per child)")
