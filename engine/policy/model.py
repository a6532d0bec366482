"""The policy model: what a TOML policy file means, as frozen dataclasses.

This module is the contract between the parser (``engine.policy.parse``), the
IKE engine (``engine.ike``), the datapaths and the console. Parsing and
validation live elsewhere; here are only the shapes and their defaults.
Vocabulary follows swanctl.conf so a strongSwan admin reads it at once.
Durations are seconds (float); byte and packet limits are ints, 0 = unlimited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from engine.crypto.transforms import TransformType
from engine.policy.ts import TrafficSelector
from engine.secret import Secret

Datapath = Literal["kernel", "userspace", "lab"]
AuthMethod = Literal["psk", "pubkey", "eap-mschapv2", "eap-tls", "eap"]
Revocation = Literal["relaxed", "ifuri", "strict"]
Mode = Literal["tunnel", "transport"]
IpsecProtocol = Literal["esp", "ah"]
StartAction = Literal["none", "trap", "start"]
DpdAction = Literal["clear", "trap", "restart"]
CloseAction = Literal["none", "trap", "start"]
UniquePolicy = Literal["no", "never", "replace", "keep"]
RuleAction = Literal["bypass", "discard"]


@dataclass(frozen=True)
class Transform:
    """One transform of a proposal."""

    type: TransformType
    """ENCR, PRF, INTEG, KE or ESN; or ADDITIONAL_KEY_EXCHANGE_1..7 (an AdditionalKeType, RFC 9370)."""
    id: int
    """IANA transform ID (see engine.crypto.transforms)."""
    key_length: int | None = None
    """KEY_LENGTH attribute in bits, for variable-key ciphers (AES)."""


@dataclass(frozen=True)
class Proposal:
    """One proposal as written in strongSwan keywords, e.g. ``aes256gcm16-prfsha384-x25519``.

    Like strongSwan, every combination of the listed transforms is acceptable.
    """

    protocol: Literal["ike", "esp", "ah"]
    """What the proposal is for."""
    encr: tuple[Transform, ...] = ()
    """Encryption algorithms (empty for AH)."""
    integ: tuple[Transform, ...] = ()
    """Integrity algorithms (empty with AEAD ciphers)."""
    prf: tuple[Transform, ...] = ()
    """Pseudo-random functions (IKE only)."""
    ke: tuple[Transform, ...] = ()
    """Key exchange methods. For ESP/AH these are PFS groups; empty means no PFS."""
    esn: tuple[Transform, ...] = ()
    """Extended sequence numbers (ESP/AH); empty means NO_ESN only."""
    text: str = ""
    """The proposal string as the admin wrote it."""
    additional_ke: tuple[Transform, ...] = ()
    """RFC 9370 additional key exchanges (``ke1_mlkem768``): each Transform's type is its
    ADDITIONAL_KEY_EXCHANGE_n, several per n are alternatives, KeId.NONE makes that n optional."""

    def transforms(self) -> tuple[Transform, ...]:
        return self.encr + self.prf + self.integ + self.ke + self.esn + self.additional_ke


@dataclass(frozen=True)
class Identity:
    """An IKE identity (RFC 7296 §3.5) parsed from swanctl-style text."""

    kind: Literal["fqdn", "rfc822", "ipv4", "ipv6", "dn", "key_id", "any"]
    """ID type; ``any`` (``%any``) only matches, it is never sent."""
    value: str
    """The text as written (without a leading ``@`` for FQDN)."""

    def __str__(self) -> str:
        return "%any" if self.kind == "any" else self.value


@dataclass(frozen=True)
class AuthConfig:
    """One side's authentication (swanctl ``local``/``remote`` sections)."""

    auth: AuthMethod = "psk"
    """``psk`` or ``pubkey`` (certificates, RFC 7427)."""
    id: Identity | None = None
    """IKE identity; None means the IKE address of that side."""
    certs: tuple[str, ...] = ()
    """Local: our certificate files (end entity first, then intermediates)."""
    cacerts: tuple[str, ...] = ()
    """Remote: CA certificates trusted to authenticate the peer."""
    eap_id: str | None = None
    """EAP identity (swanctl's eap_id), free text (``DOMAIN\\user`` is common): remote ``%any`` or a
    pattern with ``*`` makes the gateway ask it with EAP-Identity; local, the name our client gives
    (default: its IKE identity)."""
    revocation: Revocation = "relaxed"
    """Remote: CRL checking of the peer's certificates (swanctl's revocation), with the CRLs of
    [engine] crls and those fetched from http:// distribution points. ``relaxed``: a certificate
    listed in a CRL fails; ``strict``: also one whose CA has no current CRL; ``ifuri``: strict for a
    certificate naming a CRL distribution point, and an expired CRL fails."""
    cert_policy: tuple[str, ...] = ()
    """Remote: certificate policy OIDs (dotted, ``1.3.6.1.4.1.311.21.8.1``) the peer's certificate
    must hold, each valid under its path (swanctl's cert_policy)."""

    @property
    def is_eap(self) -> bool:
        """``auth`` is an EAP method (``eap``, ``eap-mschapv2``, ``eap-tls``)."""
        return self.auth == "eap" or self.auth.startswith("eap-")


@dataclass(frozen=True)
class ChildConfig:
    """A CHILD SA template (swanctl ``children.<name>``)."""

    name: str
    mode: Mode = "tunnel"
    protocol: IpsecProtocol = "esp"
    local_ts: tuple[TrafficSelector, ...] = (TrafficSelector.dynamic_placeholder(),)
    """Our side's selectors (default ``dynamic``: our IKE address)."""
    remote_ts: tuple[TrafficSelector, ...] = (TrafficSelector.dynamic_placeholder(),)
    """The peer's side."""
    proposals: tuple[Proposal, ...] = ()
    """ESP or AH proposals (TOML ``esp_proposals`` / ``ah_proposals``)."""
    rekey_time: float = 3600.0
    """Soft lifetime in seconds: rekey then (minus a random jitter up to rand_time)."""
    life_time: float = 3960.0
    """Hard lifetime in seconds: the SA is deleted then if not rekeyed."""
    rand_time: float = 360.0
    """Maximum random jitter subtracted from rekey_time."""
    rekey_bytes: int = 0
    life_bytes: int = 0
    rekey_packets: int = 0
    life_packets: int = 0
    start_action: StartAction = "none"
    dpd_action: DpdAction = "clear"
    close_action: CloseAction = "none"
    replay_window: int = 64
    """Anti-replay window in packets (RFC 4303 appendix A), up to 4096; 0 disables it.
    64 is the default RFC 4303 §3.4.3 asks for (charon's own default is 32): packets a loaded
    sender or a multi-queue path reorders by up to 64 still count."""
    priority: int | None = None
    """Explicit SPD priority (lower wins); None: by specificity."""


@dataclass(frozen=True)
class ConnectionConfig:
    """An IKE connection (swanctl ``connections.<name>``)."""

    name: str
    local_addrs: tuple[str, ...] = ()
    """Our addresses; empty means any listen address."""
    remote_addrs: tuple[str, ...] = ()
    """Peer addresses, networks, ranges or host names; empty or ``%any`` accepts any peer (responder
    only). We initiate to the first address or host name; a host name is resolved (the system
    resolver) when initiating, again after 60 s, and the responder matches what it last resolved to."""
    local_port: int = 500
    remote_port: int = 500
    """The peer's IKE port."""
    remote_natt_port: int = 4500
    """The peer's NAT-T port, where IKE floats to when a NAT is seen or encap is set (RFC 7296 §2.23), or
    with mobike after IKE_SA_INIT when the peer does NAT-T and remote_port is 500 (RFC 4555 §3.3)."""
    proposals: tuple[Proposal, ...] = ()
    """IKE proposals, in preference order."""
    local: AuthConfig = field(default_factory=AuthConfig)
    remote: AuthConfig = field(default_factory=AuthConfig)
    encap: bool = False
    """Force UDP encapsulation (ESP-in-UDP on natt_port) even without a NAT."""
    dpd_delay: float = 0.0
    """Send a liveness check after this much silence (no IKE message and no ESP packet from the peer);
    0 disables DPD."""
    rekey_time: float = 14400.0
    """IKE SA soft lifetime (seconds)."""
    over_time: float = 1440.0
    """Hard lifetime = rekey_time + over_time."""
    rand_time: float = 1440.0
    """Maximum jitter subtracted from rekey_time."""
    fragmentation: bool = True
    """Offer and use IKE fragmentation (RFC 7383)."""
    mobike: bool = True
    """Offer MOBIKE (RFC 4555); swanctl's default is yes. As a responder clients move their SAs to
    a new address; as initiator we move ours when our address changes (engine.ike.exchanges.mobike)."""
    send_certreq: bool = True
    keyingtries: int = 1
    """How many times to try establishing; 0 = forever."""
    unique: UniquePolicy = "no"
    """Older IKE SAs of the same peer (its EAP identity when it used EAP, else its IKE identity, as charon)
    as the responder, as swanctl's unique: ``no`` (they go only when the peer's
    IKE_AUTH carries INITIAL_CONTACT), ``replace`` (a new IKE SA replaces them; from the same address
    and port, a reauthentication, 10 s later), ``keep`` (a new IKE SA from another address is refused),
    ``never`` (kept, even on INITIAL_CONTACT). engine.ike.uniqueness."""
    children: tuple[ChildConfig, ...] = ()
    ppk_id: str | None = None
    """RFC 8784 Postquantum Preshared Key to use (the id of a ``[ppk.NAME]`` secret), as swanctl's ppk_id."""
    ppk_required: bool = False
    """Refuse the IKE SA unless a PPK went into its keys (swanctl's ppk_required)."""
    pools: tuple[str, ...] = ()
    """Responder: names of ``[pools.NAME]`` to lease clients' virtual IPs from (swanctl's pools)."""
    vips: tuple[str, ...] = ()
    """Initiator: virtual IPs to request, ``0.0.0.0`` / ``::`` for any (swanctl's vips)."""
    expected_clients: int = 0
    """Hint: how many clients this connection should hold at once (lint checks the pools hold them); 0: none."""
    redirect_to: str | None = None
    """Responder (RFC 5685): a gateway (address or name) new clients are sent to instead of being served."""

    def child(self, name: str) -> ChildConfig:
        for c in self.children:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class RuleConfig:
    """Traffic handled outside IPsec: bypass (pass in clear) or discard (drop)."""

    name: str
    action: RuleAction
    local_ts: tuple[TrafficSelector, ...] = (TrafficSelector.any(),)
    remote_ts: tuple[TrafficSelector, ...] = (TrafficSelector.any(),)
    priority: int | None = None
    """Explicit SPD priority (lower wins); None: by specificity."""


@dataclass(frozen=True)
class PoolConfig:
    """A ``[pools.NAME]`` section: virtual IPs and the settings clients get with them (swanctl's pools)."""

    name: str
    addrs: str
    """As written: a range ``198.51.100.130-198.51.100.250`` or a network ``198.51.100.128/25``
    (a network's first and last addresses are not handed out, as strongSwan does)."""
    dns: tuple[str, ...] = ()
    """DNS servers sent in the configuration reply."""
    split_include: tuple[str, ...] = ()
    """Networks the clients route into the tunnel (INTERNAL_IP4/6_SUBNET); empty: everything."""
    split_exclude: tuple[str, ...] = ()
    """Networks the clients keep out of the tunnel (sent where a client understands it)."""


@dataclass(frozen=True)
class EngineConfig:
    """The ``[engine]`` section."""

    datapath: Datapath = "kernel"
    listen: tuple[str, ...] = ()
    """Addresses to bind IKE sockets to; empty means every address (0.0.0.0)."""
    ike_port: int = 500
    natt_port: int = 4500
    secrets: str | None = None
    """Path of the secrets file, relative to the policy file's folder."""
    control: str | None = None
    """Control socket path; None means the default /run/ipsec-console/control.sock."""
    retransmit_timeout: float = 4.0
    """First retransmission after this many seconds (charon's default)."""
    retransmit_base: float = 1.8
    """Each retry waits base times longer."""
    retransmit_tries: int = 5
    """Retransmissions before giving up."""
    half_open_threshold: int = 10
    """Half-open IKE SAs above which a responder demands COOKIEs."""
    keepalive: float = 20.0
    """NAT-T keepalive interval when behind a NAT."""
    crls: tuple[str, ...] = ()
    """CRL files used to check peer certificates."""
    pki_dir: str | None = None
    """The CA folder of ``ipsec-console pki`` (TOML ``pki``), relative to the policy file's folder;
    None means ``pki/`` next to the policy file. The console's PKI screen and expiry warnings use it."""
    tun_device: str = "ipsecc0"
    """Userspace datapath: the TUN device's name."""
    tun_mtu: int = 1400
    """Userspace datapath: the TUN device's MTU (room for ESP and UDP headers on a 1500-byte path)."""
    tun_offload: str = "on"
    """Userspace datapath: ``on`` (the TUN device hands over TCP/UDP super-packets, cut here into
    standard packets, one ESP packet each, for any peer) or ``off`` (packet by packet). The old
    super-packet modes ``auto``/``jumbo`` still load and mean ``on`` (lint: deprecated-key)."""
    state_dir: str | None = None
    """Folder for the change journal and the usage counters ``audit`` reads, relative to the policy
    file's folder; None: ``$STATE_DIRECTORY`` (systemd) or /var/lib/ipsec-console if it exists."""
    save_keys: str | None = None
    """Debugging only: a folder where the engine writes every IKE and ESP key in Wireshark's
    ``ikev2_decryption_table`` and ``esp_sa`` files (strongSwan's save-keys format). Off by default."""
    metrics_textfile: str | None = None
    """Prometheus metrics written to this file (for node_exporter's textfile collector) every
    ``metrics_interval``; relative to the policy file's folder."""
    metrics_listen: str | None = None
    """Serve Prometheus metrics over HTTP on this loopback address, e.g. ``127.0.0.1:9814``."""
    metrics_interval: float = 15.0
    """Seconds between two writes of ``metrics_textfile``."""
    max_packet: int = 10000
    """Largest IKE datagram, and largest reassembled IKE message, accepted (bytes; charon's default)."""
    cookie_threshold_ip: int = 3
    """Half-open IKE SAs from one address above which a responder demands COOKIEs from it."""
    block_threshold: int = 5
    """Half-open IKE SAs one address may hold; its further IKE_SA_INIT requests are ignored."""
    init_limit_half_open: int = 1000
    """Half-open IKE SAs in all; further IKE_SA_INIT requests are ignored (0: no limit)."""


LabFlow = Literal["icmp", "udp", "tcp"]


@dataclass(frozen=True)
class LabConfig:
    """The ``[lab]`` section: simulated peers and traffic for ``datapath = "lab"``."""

    peers: tuple[str, ...] = ()
    """Policy files of the simulated peers, relative to this policy file's folder."""
    rate: float = 10.0
    """Traffic generator rate in packets per second (all flows together)."""
    flows: tuple[LabFlow, ...] = ("icmp", "udp", "tcp")
    """Kinds of generated traffic between the peers' protected networks."""


@dataclass(frozen=True)
class IkeSecret:
    """A ``[ike.<name>]`` entry of the secrets file."""

    name: str
    ids: tuple[Identity, ...]
    """Identities this secret is for; empty matches any."""
    secret: Secret


@dataclass(frozen=True)
class PrivateKeySecret:
    """A ``[private.<name>]`` entry: a private key file, optionally encrypted."""

    name: str
    file: str
    passphrase: Secret | None = None


@dataclass(frozen=True)
class PpkSecret:
    """A ``[ppk.<name>]`` entry: an RFC 8784 Postquantum Preshared Key (swanctl's secrets.ppk)."""

    name: str
    id: str
    """The PPK_ID that names this key on the wire (PPK_IDENTITY notify)."""
    secret: Secret


@dataclass(frozen=True)
class EapSecret:
    """An ``[eap.NAME]`` entry: an EAP user's password (swanctl's secrets.eap)."""

    name: str
    ids: tuple[str, ...]
    """The EAP identities it is for (``id``: one name or a list), free text compared without case."""
    secret: Secret


@dataclass(frozen=True)
class Secrets:
    """The secrets file's content. Never drawn, logged or exported."""

    ike: tuple[IkeSecret, ...] = ()
    private: tuple[PrivateKeySecret, ...] = ()
    path: str | None = None
    """Where they were read from."""
    ppk: tuple[PpkSecret, ...] = ()
    eap: tuple[EapSecret, ...] = ()


@dataclass(frozen=True)
class Policy:
    """One host's whole policy."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    connections: tuple[ConnectionConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
    secrets: Secrets = field(default_factory=Secrets)
    path: str | None = None
    """The TOML file this policy came from, if any."""
    lab: LabConfig | None = None
    """The ``[lab]`` section; only with ``datapath = "lab"``."""
    pools: tuple[PoolConfig, ...] = ()
    """``[pools.NAME]`` sections: virtual IP pools for road warriors."""

    def pool(self, name: str) -> PoolConfig:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)

    def connection(self, name: str) -> ConnectionConfig:
        for c in self.connections:
            if c.name == name:
                return c
        raise KeyError(name)
