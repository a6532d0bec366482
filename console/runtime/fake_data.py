"""The fake runtime's scenario: a gateway policy (as a model and as the TOML
file an admin would have written) with peers that succeed and peers that fail
in instructive ways. Addresses stay inside 192.0.2.0/24 and 198.51.100.0/24.
"""

from __future__ import annotations

from pathlib import Path

from engine.crypto.transforms import EncrId, EsnId, IntegId, KeId, PrfId, TransformType
from engine.policy.model import (
    AuthConfig,
    ChildConfig,
    ConnectionConfig,
    EngineConfig,
    Identity,
    IkeSecret,
    Policy,
    PrivateKeySecret,
    Proposal,
    RuleConfig,
    Secrets,
    Transform,
)
from engine.policy.ts import parse_ts
from engine.secret import Secret
from engine.status import PoolInfo

# Known text the no-secret-on-screen test looks for: it must never be drawn.
DEMO_PSK = "correct-horse-battery-staple-7Qz"
DEMO_KEY_PASSPHRASE = "swordfish-passphrase-Xk29"

_E = TransformType.ENCR
_P = TransformType.PRF
_I = TransformType.INTEG
_K = TransformType.KE
_N = TransformType.ESN


def _ike(text: str, encr: tuple[int, int | None], prf: int, ke: int, integ: int | None = None) -> Proposal:
    return Proposal(
        protocol="ike",
        encr=(Transform(_E, encr[0], encr[1]),),
        prf=(Transform(_P, prf),),
        integ=(Transform(_I, integ),) if integ else (),
        ke=(Transform(_K, ke),),
        text=text,
    )


def _esp(text: str, encr: tuple[int, int | None], integ: int | None = None, ke: int | None = None) -> Proposal:
    return Proposal(
        protocol="esp",
        encr=(Transform(_E, encr[0], encr[1]),),
        integ=(Transform(_I, integ),) if integ else (),
        ke=(Transform(_K, ke),) if ke else (),
        esn=(Transform(_N, EsnId.NO_ESN),),
        text=text,
    )


STRONG_IKE = (
    _ike("aes256gcm16-prfsha384-x25519", (EncrId.AES_GCM_16, 256), PrfId.HMAC_SHA2_384, KeId.CURVE25519),
    _ike("aes256-sha384-ecp384", (EncrId.AES_CBC, 256), PrfId.HMAC_SHA2_384, KeId.ECP_384, IntegId.HMAC_SHA2_384_192),
)
STRONG_ESP = (_esp("aes256gcm16-x25519", (EncrId.AES_GCM_16, 256), ke=KeId.CURVE25519),)


def _ts(*texts: str):
    return tuple(parse_ts(t) for t in texts)


def _child(name: str, local: tuple[str, ...], remote: tuple[str, ...], **kw) -> ChildConfig:
    return ChildConfig(name=name, local_ts=_ts(*local), remote_ts=_ts(*remote), proposals=STRONG_ESP, **kw)


def _conn(name: str, local: str, remote: tuple[str, ...], lid: str, rid: str, children, **kw) -> ConnectionConfig:
    return ConnectionConfig(
        name=name,
        local_addrs=(local,),
        remote_addrs=remote,
        proposals=kw.pop("proposals", STRONG_IKE),
        local=AuthConfig(auth="psk", id=Identity("fqdn", lid)),
        remote=AuthConfig(auth="psk", id=Identity("fqdn", rid)),
        children=tuple(children),
        **kw,
    )


def demo_policy(path: str | None = "/etc/ipsec-console/gateway.toml") -> Policy:
    """The gateway of the fake scenario, with a PSK and a key passphrase in its secrets."""
    conns = (
        _conn("branch", "192.0.2.1", ("192.0.2.2",), "hq.example.org", "branch.example.org", [
            _child("lan", ("198.51.100.0/25",), ("198.51.100.128/26",), start_action="start", dpd_action="restart"),
            _child("voice", ("198.51.100.0/25[udp/5060]",), ("198.51.100.192/26[udp/5060]",), start_action="start"),
        ], dpd_delay=30.0),
        _conn("roadwarrior", "192.0.2.1", (), "hq.example.org", "laptop.example.org", [
            _child("rw", ("198.51.100.0/25",), ("dynamic",)),
        ], encap=True),
        _conn("legacy", "192.0.2.1", ("192.0.2.30",), "hq.example.org", "legacy.example.org", [
            _child("old", ("198.51.100.0/25",), ("198.51.100.240/28",), start_action="start"),
        ]),
        _conn("partner", "192.0.2.1", ("192.0.2.40",), "hq.example.org", "partner.example.net", [
            _child("apps", ("198.51.100.0/26[tcp/443]",), ("198.51.100.224/28",), start_action="start"),
        ]),
        _conn("vendor", "192.0.2.1", ("192.0.2.50",), "hq.example.org", "vendor.example.com", [
            _child("support", ("198.51.100.10/32[tcp/22]",), ("198.51.100.250/32",), start_action="start"),
        ]),
    )
    rules = (
        RuleConfig(name="dns", action="bypass", remote_ts=_ts("0.0.0.0/0[udp/53]")),
        RuleConfig(name="no-telnet", action="discard", remote_ts=_ts("0.0.0.0/0[tcp/23]")),
    )
    hq = Identity("fqdn", "hq.example.org")
    secrets = Secrets(
        ike=(IkeSecret("branch", (hq, Identity("fqdn", "branch.example.org")), Secret(DEMO_PSK)),
             *(IkeSecret(peer.split(".")[0], (hq, Identity("fqdn", peer)), Secret(psk))
               for peer, psk in OTHER_PSKS.items())),
        private=(PrivateKeySecret("gateway", "gateway.key.pem", Secret(DEMO_KEY_PASSPHRASE)),),
        path=str(Path(path).with_name("gateway.secrets.toml")) if path else None,
    )
    return Policy(
        engine=EngineConfig(datapath="userspace", listen=("192.0.2.1",), secrets="gateway.secrets.toml"),
        connections=conns,
        rules=rules,
        secrets=secrets,
        path=path,
    )


DEMO_POLICY_TEXT = '''\
# Head office gateway. Secrets (PSKs, key passphrases) live in
# gateway.secrets.toml, mode 0600, never in this file.
[engine]
datapath = "userspace"
listen = ["192.0.2.1"]
secrets = "gateway.secrets.toml"

[connections.branch]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
proposals = ["aes256gcm16-prfsha384-x25519", "aes256-sha384-ecp384"]
local = { auth = "psk", id = "hq.example.org" }
remote = { auth = "psk", id = "branch.example.org" }
dpd_delay = "30s"

[connections.branch.children.lan]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.128/26"]
esp_proposals = ["aes256gcm16-x25519"]
start_action = "start"
dpd_action = "restart"

[connections.branch.children.voice]
local_ts = ["198.51.100.0/25[udp/5060]"]
remote_ts = ["198.51.100.192/26[udp/5060]"]
esp_proposals = ["aes256gcm16-x25519"]
start_action = "start"

[connections.roadwarrior]       # laptops, usually behind a NAT
local_addrs = ["192.0.2.1"]
proposals = ["aes256gcm16-prfsha384-x25519", "aes256-sha384-ecp384"]
local = { auth = "psk", id = "hq.example.org" }
remote = { auth = "psk", id = "laptop.example.org" }
encap = true

[connections.roadwarrior.children.rw]
local_ts = ["198.51.100.0/25"]
remote_ts = ["dynamic"]
esp_proposals = ["aes256gcm16-x25519"]

[connections.legacy]            # an old box that only speaks SHA-1 and MODP-1024
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.30"]
proposals = ["aes256gcm16-prfsha384-x25519", "aes256-sha384-ecp384"]
local = { auth = "psk", id = "hq.example.org" }
remote = { auth = "psk", id = "legacy.example.org" }

[connections.legacy.children.old]
local_ts = ["198.51.100.0/25"]
remote_ts = ["198.51.100.240/28"]
esp_proposals = ["aes256gcm16-x25519"]
start_action = "start"

[connections.partner]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.40"]
proposals = ["aes256gcm16-prfsha384-x25519", "aes256-sha384-ecp384"]
local = { auth = "psk", id = "hq.example.org" }
remote = { auth = "psk", id = "partner.example.net" }

[connections.partner.children.apps]
local_ts = ["198.51.100.0/26[tcp/443]"]
remote_ts = ["198.51.100.224/28"]
esp_proposals = ["aes256gcm16-x25519"]
start_action = "start"

[connections.vendor]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.50"]
proposals = ["aes256gcm16-prfsha384-x25519", "aes256-sha384-ecp384"]
local = { auth = "psk", id = "hq.example.org" }
remote = { auth = "psk", id = "vendor.example.com" }

[connections.vendor.children.support]
local_ts = ["198.51.100.10/32[tcp/22]"]
remote_ts = ["198.51.100.250/32"]
esp_proposals = ["aes256gcm16-x25519"]
start_action = "start"

[rules.dns]
action = "bypass"
remote_ts = ["0.0.0.0/0[udp/53]"]

[rules.no-telnet]
action = "discard"
remote_ts = ["0.0.0.0/0[tcp/23]"]
'''


OTHER_PSKS = {
    "laptop.example.org": "laptops-share-this-one-Rw81mQ",
    "legacy.example.org": "legacy-box-psk-Pz0u4Lk2",
    "partner.example.net": "partner-psk-Yh7d3Nn5Vb",
    "vendor.example.com": "vendor-psk-Qa9s8Dd7Ff",
}


def secrets_text() -> str:
    """The demo secrets file (mode 0600 on disk): one PSK per peer, and a key passphrase."""
    out = ["# Demo secrets: one PSK per peer. Never shown by the console.",
           "[ike.branch]", 'ids = ["hq.example.org", "branch.example.org"]', f'secret = "{DEMO_PSK}"', ""]
    for peer, psk in OTHER_PSKS.items():
        name = peer.split(".")[0]
        out += [f"[ike.{name}]", f'ids = ["hq.example.org", "{peer}"]', f'secret = "{psk}"', ""]
    out += ["[private.gateway]", 'file = "gateway.key.pem"', f'passphrase = "{DEMO_KEY_PASSPHRASE}"', ""]
    return "\n".join(out)


def all_secret_strings() -> tuple[str, ...]:
    return (DEMO_PSK, DEMO_KEY_PASSPHRASE, *OTHER_PSKS.values())


def write_demo_files(folder) -> str:
    """Write gateway.toml and gateway.secrets.toml (0600) into ``folder``; returns the policy path."""
    import os
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    policy = folder / "gateway.toml"
    policy.write_text(DEMO_POLICY_TEXT, encoding="utf-8")
    secrets = folder / "gateway.secrets.toml"
    fd = os.open(secrets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets_text())
    os.chmod(secrets, 0o600)
    return str(policy)


def scale_policy(connections: int, children_per_connection: int) -> Policy:
    """Many connections, for the 10,000 CHILD SA benchmark."""
    conns = []
    for i in range(connections):
        third = 1 + (i % 250)
        conns.append(
            _conn(f"site{i:03d}", "192.0.2.1", (f"192.0.2.{third}",), "hq.example.org", f"site{i:03d}.example.org", [
                _child(f"net{j:03d}", ("198.51.100.0/25",), (f"198.51.100.{128 + (j % 128)}/32",))
                for j in range(children_per_connection)
            ])
        )
    return Policy(engine=EngineConfig(datapath="userspace"), connections=tuple(conns), path=None)


# Road-warrior clients of the "roadwarrior" connection (FakeRuntime(road_warriors=True)):
# (outer address, outer port, IKE identity, status fields).
ROAD_WARRIORS = (
    ("192.0.2.101", 4500, "alice@example.org",
     {"virtual_ips": ("198.51.100.130",), "pool": "rw", "eap_identity": "alice@example.org",
      "eap_method": "EAP-MSCHAPv2", "cert_subject": "", "mobike_moves": 2}),
    ("192.0.2.102", 61044, "EXAMPLE\\bob",
     {"virtual_ips": ("198.51.100.131",), "pool": "rw", "eap_identity": "EXAMPLE\\bob",
      "eap_method": "EAP-MSCHAPv2", "cert_subject": "", "mobike_moves": 0}),
    ("192.0.2.103", 4500, "C=CH, O=Example, CN=carol-laptop",
     {"virtual_ips": ("198.51.100.132",), "pool": "rw", "eap_identity": "", "eap_method": "",
      "cert_subject": "C=CH, O=Example, CN=carol-laptop", "mobike_moves": 1}),
)
DEMO_POOLS = (PoolInfo("rw", "198.51.100.128/25", 126, 3, 1),)
