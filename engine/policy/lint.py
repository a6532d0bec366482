"""Lint: warnings about a policy that loads but is weaker or stranger than it should be.

Every warning carries a rule id (``[weak-encryption]`` at the end of its
message, and ``Finding.rule``) and says what to do instead. A rule whose
advice a sound policy may have to ignore (not-quantum-safe: the peer may only
speak classic IKEv2) reports with severity ``info``, which ``check --strict``
does not fail on.

Rules: weak-encryption, null-encryption, weak-integrity, no-integrity,
weak-prf, weak-dh, short-icv, short-psk, weak-psk, shared-psk,
psk-roadwarrior, psk-many-peers, secrets-readable, ca-without-crl,
catch-all-protect, shadowed, no-children, not-quantum-safe, short-ppk, save-keys,
secrets-owner, deprecated-key, address-family; and from ``engine.policy.rwlint``: pool-overlap,
pool-too-small, eap-without-certificate, windows-weak-proposals.

Lint reads files only where a rule cannot be decided otherwise (the secrets
file's mode, the CA and CRL files of ``ca-without-crl``), and never fails on
them: a missing or unreadable file is an error of loading, reported there.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.crypto.digests import sha256
from engine.crypto.transforms import EncrId, IntegId, KeId, PrfId, transform_name
from engine.policy._reader import key_path
from engine.policy.findings import Finding, sort_findings
from engine.policy.identity import identity_for_address, is_wildcard
from engine.policy.model import ConnectionConfig, Policy, Proposal
from engine.policy import pq, rwlint
from engine.policy.parse import address_kind, single_host
from engine.policy.secrets import lookup_psk, ownership_problem, permission_problem
from engine.policy.spd import Spd, SpdEntry

RULES = ("weak-encryption", "null-encryption", "weak-integrity", "no-integrity", "weak-prf", "weak-dh",
         "short-icv", "short-psk", "weak-psk", "shared-psk", "psk-roadwarrior", "psk-many-peers",
         "secrets-readable", "ca-without-crl", "catch-all-protect", "shadowed", "no-children",
         "not-quantum-safe", "short-ppk", "save-keys", "secrets-owner", "deprecated-key",
         "address-family") + rwlint.RULES

MIN_PSK_LENGTH = 20
MIN_PSK_DISTINCT = 8
MIN_PPK_LENGTH = 32
"""RFC 8784 §5: a PPK should have at least 256 bits of entropy."""
MAX_PSK_PEERS = 3
"""A PSK connection open to more peers than this should use certificates."""

_WEAK_ENCR = {EncrId.DES: "DES (56-bit key, broken)", EncrId.TRIPLE_DES: "3DES (64-bit blocks, deprecated by RFC 8221)",
              EncrId.DES_IV64: "DES", EncrId.DES_IV32: "DES"}
_WEAK_INTEG = {IntegId.HMAC_MD5_96: "HMAC-MD5", IntegId.HMAC_MD5_128: "HMAC-MD5",
               IntegId.HMAC_SHA1_96: "HMAC-SHA1", IntegId.HMAC_SHA1_160: "HMAC-SHA1"}
_WEAK_PRF = {PrfId.HMAC_MD5: "PRF-HMAC-MD5", PrfId.HMAC_SHA1: "PRF-HMAC-SHA1"}
_WEAK_KE = {KeId.MODP_768: "MODP group 1 (768 bits)", KeId.MODP_1024: "MODP group 2 (1024 bits)",
            KeId.MODP_1536: "MODP group 5 (1536 bits)", KeId.MODP_1024_160: "MODP group 22 (1024 bits, RFC 5114)",
            KeId.MODP_2048_224: "MODP group 23 (RFC 5114 prime of unclear origin)",
            KeId.MODP_2048_256: "MODP group 24 (RFC 5114 prime of unclear origin)"}
_SHORT_ICV = {EncrId.AES_GCM_8: "AES-GCM with a 64-bit ICV", EncrId.AES_CCM_8: "AES-CCM with a 64-bit ICV"}


class _Linter:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.file = policy.path or "<string>"
        self.findings: list[Finding] = []

    def warn(self, path: str, rule: str, message: str, file: str | None = None) -> None:
        self.findings.append(Finding(file or self.file, path, "warning", f"{message} [{rule}]", rule=rule))

    def advise(self, path: str, rule: str, message: str) -> None:
        self.findings.append(Finding(self.file, path, "info", f"{message} [{rule}]", rule=rule))

    # -- algorithms ----------------------------------------------------------------
    def proposals(self, proposals: tuple[Proposal, ...], path: str) -> None:
        seen: set[tuple[str, str]] = set()
        for p in proposals:
            if p.text.lower() == "default":
                continue  # strongSwan's documented default list; its weak fallbacks are deliberate
            where = f"'{p.text}'"
            hits: list[tuple[str, str]] = []
            for t in p.encr:
                if t.id in _WEAK_ENCR:
                    hits.append(("weak-encryption", f"{_WEAK_ENCR[t.id]} in {where}; use aes256gcm16 "
                                 "(or aes256 with sha256)"))
                elif t.id == EncrId.NULL:
                    hits.append(("null-encryption", f"ENCR_NULL in {where} sends traffic unencrypted; use "
                                 "aes256gcm16, or AH if only integrity is wanted"))
                elif t.id in _SHORT_ICV:
                    kw = f"aes{t.key_length or 128}{'gcm' if t.id == EncrId.AES_GCM_8 else 'ccm'}16"
                    hits.append(("short-icv", f"{_SHORT_ICV[t.id]} in {where} makes forgeries likelier; "
                                 f"use {kw} (128-bit ICV)"))
            for t in p.integ:
                if t.id in _WEAK_INTEG:
                    hits.append(("weak-integrity", f"{_WEAK_INTEG[t.id]} integrity in {where} is deprecated; "
                                 "use sha256 or better"))
            for t in p.prf:
                if t.id in _WEAK_PRF:
                    hits.append(("weak-prf", f"{_WEAK_PRF[t.id]} in {where} is deprecated; use prfsha256 "
                                 "or better"))
            for t in p.ke:
                if t.id in _WEAK_KE:
                    hits.append(("weak-dh", f"{_WEAK_KE[t.id]} in {where} is too weak; use x25519, ecp256 "
                                 "or modp3072"))
            if p.protocol == "esp" and p.encr and not p.integ and not any(
                    t.id in (EncrId.AES_GCM_8, EncrId.AES_GCM_12, EncrId.AES_GCM_16, EncrId.AES_CCM_8,
                             EncrId.AES_CCM_12, EncrId.AES_CCM_16, EncrId.CHACHA20_POLY1305,
                             EncrId.NULL_AUTH_AES_GMAC) for t in p.encr):
                names = ", ".join(transform_name(t.type, t.id, t.key_length) for t in p.encr)
                hits.append(("no-integrity", f"{where} encrypts with {names} but checks no integrity, so "
                             "packets can be altered; add sha256 or use aes256gcm16"))
            for rule, msg in hits:
                if (rule, msg) not in seen:
                    seen.add((rule, msg))
                    self.warn(path, rule, msg)

    # -- PSKs -------------------------------------------------------------------------
    def psks(self) -> None:
        secrets = self.policy.secrets
        file = secrets.path or self.file
        by_value: dict[bytes, list[str]] = {}
        for entry in secrets.ike:
            path = key_path(key_path("ike", entry.name), "secret")
            raw = entry.secret.reveal()
            if len(raw) < MIN_PSK_LENGTH:
                self.warn(path, "short-psk", f"the PSK of [ike.{entry.name}] has {len(raw)} characters; use at "
                          f"least {MIN_PSK_LENGTH} random ones (e.g. from 'openssl rand -base64 24')", file)
            distinct = len(set(raw))
            if distinct < MIN_PSK_DISTINCT or _one_class(raw):
                why = (f"only {distinct} distinct characters" if distinct < MIN_PSK_DISTINCT
                       else "characters of one kind only")
                self.warn(path, "weak-psk", f"the PSK of [ike.{entry.name}] has {why}, so it is easy to guess; "
                          "mix upper and lower case letters, digits and symbols, or use a random one", file)
            # A digest keeps the value itself out of this table.
            by_value.setdefault(sha256(raw), []).append(entry.name)
        for names in by_value.values():
            for name in names[1:]:
                self.warn(key_path(key_path("ike", name), "secret"), "shared-psk",
                          f"[ike.{name}] has the same PSK as [ike.{names[0]}]: whoever knows it can pose as "
                          "either peer; give every peer its own PSK", file)

    def shared_by_connections(self) -> None:
        """One secrets entry serving several PSK connections to different peers."""
        users: dict[str, list[str]] = {}
        for c in self.policy.connections:
            if "psk" not in (c.local.auth, c.remote.auth):
                continue
            local = c.local.id or (identity_for_address(h) if (h := single_host(c.local_addrs)) else None)
            remote = c.remote.id or (identity_for_address(h) if (h := single_host(c.remote_addrs)) else None)
            if remote is None or is_wildcard(remote):
                continue  # the road-warrior rule covers these
            entry = lookup_psk(self.policy.secrets, local, remote)
            if entry is not None:
                users.setdefault(entry.name, []).append(c.name)
        file = self.policy.secrets.path or self.file
        for name, conns in users.items():
            if len(conns) > 1:
                self.warn(key_path(key_path("ike", name), "ids"), "shared-psk",
                          f"[ike.{name}] is the PSK of connections {', '.join(repr(c) for c in conns)}: each "
                          "peer can pose as the others; give every peer its own [ike.*] entry and ids", file)

    def roadwarrior(self, c: ConnectionConfig) -> None:
        if c.remote.auth != "psk":
            return
        open_addrs = not c.remote_addrs or any(address_kind(a) in ("any", "network", "range") for a in c.remote_addrs)
        if open_addrs and (c.remote.id is None or is_wildcard(c.remote.id)):
            self.warn(key_path(key_path(key_path("connections", c.name), "remote"), "auth"), "psk-roadwarrior",
                      "any peer may connect and all share one PSK, so each could impersonate the gateway to the "
                      'others; use certificates (auth = "pubkey", see ipsec-console pki) or one id and PSK per peer')

    def psk_many_peers(self, c: ConnectionConfig) -> None:
        """Several enumerated peers behind one PSK connection (open ones are psk-roadwarrior's)."""
        if c.remote.auth != "psk" or (c.remote.id is not None and not is_wildcard(c.remote.id)):
            return  # one pinned identity is one peer, however many addresses it has
        kinds = [address_kind(a) for a in c.remote_addrs]
        if not kinds or any(k in ("any", "network", "range") for k in kinds):
            return
        if len(c.remote_addrs) > MAX_PSK_PEERS:
            self.warn(key_path(key_path(key_path("connections", c.name), "remote"), "auth"), "psk-many-peers",
                      f"{len(c.remote_addrs)} peers authenticate with a PSK on this connection; a PSK does not "
                      "scale and cannot be revoked for one peer: use certificates (auth = \"pubkey\", "
                      "ipsec-console pki issue per peer), or one connection, id and PSK per peer")

    def quantum_safe(self, c: ConnectionConfig) -> None:
        """Keys a future quantum computer could recover from recorded traffic (issue 11)."""
        features = pq.NEGOTIATED & pq.ADVISED
        if not features & {"kem", "additional_ke", "ppk"} or pq.connection_is_quantum_safe(c):
            return  # no advice the engine could not follow yet
        classic = [p.text for p in c.proposals if not pq.proposal_is_quantum_safe(p)]
        hybrid_first = len(classic) < len(c.proposals)
        ways = []
        if hybrid_first:
            ways.append(f"remove {', '.join(repr(t) for t in classic)} once every peer negotiates ML-KEM")
        elif "additional_ke" in features:
            ways.append(f'use a hybrid proposal first, e.g. proposals = ["{pq.HYBRID_EXAMPLE}", ...] '
                        "(strongSwan 6.1 and Libreswan 5 peers negotiate it)")
        if "ppk" in features:
            ways.append("require a Postquantum Preshared Key (ppk_id and ppk_required = true with a [ppk.NAME] "
                        "entry in the secrets file)")
        path = key_path(key_path("connections", c.name), "proposals")
        what = ("a peer may pick one of its IKE proposals without ML-KEM" if hybrid_first
                else "none of its IKE proposals includes ML-KEM")
        self.advise(path, "not-quantum-safe", f"{what} and no PPK is required, so traffic recorded today can be "
                    f"decrypted once a large quantum computer exists; {', or '.join(ways)}")

    def ppks(self) -> None:
        file = self.policy.secrets.path or self.file
        for entry in self.policy.secrets.ppk:
            n = len(entry.secret.reveal())
            if n < MIN_PPK_LENGTH:
                self.warn(key_path(key_path("ppk", entry.name), "secret"), "short-ppk",
                          f"the PPK of [ppk.{entry.name}] has {n} bytes; RFC 8784 asks for at least 256 bits of "
                          f"entropy: use {MIN_PPK_LENGTH} random bytes (secret = \"0x\" + 'openssl rand -hex 32')",
                          file)

    def ca_without_crl(self) -> None:
        """A trusted CA none of the [engine] crls comes from: its revocations would go unnoticed."""
        # Imported here: engine.pki imports engine.policy.model, so a top-level import would be circular.
        from engine.pki.certs import load_certificate_file
        from engine.pki.errors import PkiError
        from engine.pki.validate import load_crl_files

        base = Path(self.policy.path).parent if self.policy.path else Path.cwd()
        crl_files = self.policy.engine.crls
        crls: list = []
        unreadable: list[str] = []
        for name in crl_files:
            try:
                crls += load_crl_files([base / name])
            except (PkiError, OSError):
                unreadable.append(name)
        cas: dict[str, list] = {}  # file -> its certificates, read once for every connection naming it
        for c in self.policy.connections:
            if c.remote.auth != "pubkey":
                continue
            for name in c.remote.cacerts:
                if name not in cas:
                    try:
                        cas[name] = load_certificate_file(base / name)
                    except (PkiError, OSError):
                        cas[name] = []  # loading the policy's credentials reports it
                for ca in cas[name]:
                    if any(_crl_of(crl, ca) for crl in crls):
                        continue
                    why = ("[engine] crls lists no CRL" if not crl_files else
                           f"none of the CRLs in [engine] crls ({', '.join(crl_files)}) is signed by it"
                           + (f"; unreadable: {', '.join(unreadable)}" if unreadable else ""))
                    if Path(name).name == "ca.crt" and _fetched_crl_uri(base / name):
                        break  # its certificates name an http:// CRL distribution point: that CRL is fetched
                    if Path(name).name == "ca.crt":  # a CA folder of ipsec-console pki: name its CRL file
                        folder = str(Path(name).parent)
                        todo = (f"publish its CRL (ipsec-console pki crl --dir {folder}) and add "
                                f"\"{Path(folder, 'crl.pem')}\" to [engine] crls")
                    else:
                        todo = "publish its CRL (ipsec-console pki crl) and add the file to [engine] crls"
                    if c.remote.revocation == "strict":
                        # Not a gap but a lockout: strict needs a current CRL of each CA (charon's too).
                        effect = ("with remote.revocation = \"strict\" every peer certificate it issued is "
                                  "refused")
                    else:
                        effect = "a certificate it revoked would still be accepted"
                    effect += " (unless its certificates name an http:// CRL distribution point, which is fetched)"
                    self.warn(key_path(key_path(key_path("connections", c.name), "remote"), "cacerts"),
                              "ca-without-crl", f"CA {name!r} is trusted but {why}, so {effect}; {todo}")
                    break  # one warning per file

    def secrets_file(self) -> None:
        eng = self.policy.engine
        if eng.secrets is None or eng.datapath == "lab":
            return
        base = Path(self.policy.path).parent if self.policy.path else Path.cwd()
        problem = permission_problem(base / eng.secrets)
        if problem:
            shown = os.path.join(os.path.dirname(self.policy.path or ""), eng.secrets)
            self.warn("engine.secrets", "secrets-readable", f"secrets file {shown!r}: {problem}; run: chmod 600 "
                      f"{shown} (the engine refuses to load it until then)")
        problem = ownership_problem(base / eng.secrets)
        if problem:
            shown = os.path.join(os.path.dirname(self.policy.path or ""), eng.secrets)
            self.warn("engine.secrets", "secrets-owner", f"secrets file {shown!r}: {problem.replace('FILE', shown)} "
                      "(the engine refuses to load it until then)")

    def address_family(self, c: ConnectionConfig) -> None:
        """local_addrs of one IP family, remote_addrs of the other: IKE runs over one family, so
        the connection never starts (IkeEndpoint.local_address refuses) and never answers (a
        request's two addresses are of one family; charon's ike_cfg match finds no config)."""
        mine, theirs = _families(c.local_addrs), _families(c.remote_addrs)
        if len(mine) != 1 or len(theirs) != 1 or mine == theirs:
            return
        (ours,), (peers,) = mine, theirs
        self.warn(key_path(key_path("connections", c.name), "local_addrs"), "address-family",
                  f"connection '{c.name}' can never come up: local_addrs ({', '.join(c.local_addrs)}) hold only "
                  f"IPv{ours} addresses and remote_addrs ({', '.join(c.remote_addrs)}) only IPv{peers} ones, and "
                  f"IKE runs over one family; add an IPv{peers} address (or %any) to local_addrs, or give "
                  f"remote_addrs the peer's IPv{ours} address")

    # -- selectors ------------------------------------------------------------------------
    def catch_all(self, c: ConnectionConfig) -> None:
        for ch in c.children:
            if any(l.is_catch_all and r.is_catch_all and l.version == r.version
                   for l in ch.local_ts for r in ch.remote_ts):
                path = key_path(key_path(key_path("connections", c.name), "children"), ch.name)
                self.warn(path, "catch-all-protect", "protects all traffic between any hosts "
                          "(0.0.0.0/0 <-> 0.0.0.0/0, every protocol and port); narrow local_ts and remote_ts "
                          "to the networks, protocols and ports that need IPsec (least privilege)")

    def shadowed(self) -> None:
        entries = Spd(self.policy).entries(include_implicit=True)
        groups: dict[tuple, list[int]] = {}
        for i, e in enumerate(entries):
            if not e.implicit:
                groups.setdefault(_owner(e), []).append(i)
        for owner, idxs in groups.items():
            blockers: list[SpdEntry] = []
            for i in idxs:
                e = entries[i]
                blocker = next((h for h in entries[:i] if _owner(h) != owner
                                and h.local.covers(e.local) and h.remote.covers(e.remote)), None)
                if blocker is None:
                    break
                blockers.append(blocker)
            else:
                e = entries[idxs[0]]
                first = blockers[0]
                path = (key_path("rules", e.rule) if e.rule else
                        key_path(key_path(key_path("connections", e.connection), "children"), e.child))
                what = "rule" if e.rule else "child"
                prio = f"priority {first.priority}" + (" (explicit)" if first.explicit_priority else "")
                self.warn(path, "shadowed", f"this {what} can never match: {first.name} ({prio}) decides every "
                          f"packet it selects first; narrow that one, give this {what} a lower priority "
                          "number, or remove it")

    def save_keys(self) -> None:
        folder = self.policy.engine.save_keys
        if folder:
            self.warn("engine.save_keys", "save-keys", f"every IKE and ESP key is written to {folder!r} (Wireshark "
                      "decryption tables): whoever reads that folder decrypts all traffic; remove save_keys once "
                      "the debugging is done, and delete the folder")

    def deprecated(self) -> None:
        offload = self.policy.engine.tun_offload
        if offload in ("auto", "jumbo"):
            # The old modes sent whole 64 KiB TCP super-packets as one (IP-fragmented) ESP packet to
            # ipsec-console peers; they now mean "on", which cuts them into standard packets for any peer.
            self.warn(key_path("engine", "tun_offload"), "deprecated-key",
                      f"tun_offload = \"{offload}\" is deprecated and now means \"on\" (super-packets are cut "
                      "into standard ESP packets for every peer); write \"on\" (the default) or remove the key")

    def run(self) -> list[Finding]:
        self.deprecated()
        for c in self.policy.connections:
            cpath = key_path("connections", c.name)
            self.proposals(c.proposals, key_path(cpath, "proposals"))
            for ch in c.children:
                self.proposals(ch.proposals, key_path(key_path(key_path(cpath, "children"), ch.name),
                                                      f"{ch.protocol}_proposals"))
            if not c.children:
                self.warn(cpath, "no-children", "this connection has no children, so its IKE SA would carry no "
                          f"traffic; add [{cpath}.children.NAME] with local_ts and remote_ts")
            self.roadwarrior(c)
            self.psk_many_peers(c)
            self.catch_all(c)
            self.quantum_safe(c)
            self.address_family(c)
            rwlint.eap_without_certificate(c, self.warn)
            rwlint.windows_weak_proposals(c, self.warn)
        rwlint.pools(self.policy, self.warn)
        self.psks()
        self.ppks()
        self.shared_by_connections()
        self.secrets_file()
        self.ca_without_crl()
        self.shadowed()
        self.save_keys()
        return sort_findings(self.findings)


def _families(entries: tuple[str, ...]) -> set[int]:
    """The IP versions ``entries`` (local_addrs / remote_addrs) hold addresses of; {4, 6} for none,
    %any or a host name (either may be meant)."""
    out: set[int] = set()
    for entry in entries:
        text, kind = entry.strip(), address_kind(entry)
        if text in ("%any4", "%any6"):
            out.add(int(text[-1]))
        elif kind in ("ip", "network", "range"):
            out.add(6 if ":" in text else 4)
        else:
            return {4, 6}
    return out or {4, 6}


def _owner(e: SpdEntry) -> tuple:
    return ("rule", e.rule) if e.rule else ("child", e.connection, e.child)


def _crl_of(crl, ca) -> bool:
    """Is this CRL issued and signed by this CA certificate?"""
    try:
        return crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())
    except Exception:  # an odd key type or a damaged CRL: not a CRL of this CA
        return False


def _one_class(raw: bytes) -> bool:
    classes = {("l" if 97 <= b <= 122 else "u" if 65 <= b <= 90 else "d" if 48 <= b <= 57 else "o") for b in raw}
    return len(classes) <= 1


def lint(policy: Policy) -> list[Finding]:
    """Warnings for a policy that parsed; see the module docstring for the rules."""
    return _Linter(policy).run()


def _fetched_crl_uri(ca_file: Path) -> bool:
    """Whether a CA folder of ipsec-console pki puts an http:// CRL URI in what it issues (--crl-uri):
    the runtime fetches that CRL (engine.runtime.crlfetch)."""
    from engine.pki.ca import ca_info
    from engine.pki.errors import PkiError

    try:
        uri = ca_info(ca_file.parent).crl_uri
    except (PkiError, OSError, ValueError):
        return False
    return bool(uri) and uri.lower().startswith("http://")
