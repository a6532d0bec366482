"""Plain-words explanations of failed negotiations, with the fix.

Pure functions from ``engine.events.NegotiationFailed`` (plus what the
negotiation ladder saw) to text and Rich renderables, so they are easy to
test and reuse (``ipsec-console`` could print them too).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from engine.events import ExchangeReceived, ExchangeSent, NegotiationFailed
from engine.printable import escape

# strongSwan keyword for a transform name as the engine reports it.
_KEYWORDS = {
    "AES_CBC_128": "aes128", "AES_CBC_192": "aes192", "AES_CBC_256": "aes256",
    "AES_GCM_16_128": "aes128gcm16", "AES_GCM_16_256": "aes256gcm16",
    "3DES_CBC": "3des", "3DES": "3des", "CHACHA20_POLY1305": "chacha20poly1305",
    "HMAC_SHA1_96": "sha1", "HMAC_MD5_96": "md5", "HMAC_SHA2_256_128": "sha256",
    "HMAC_SHA2_384_192": "sha384", "HMAC_SHA2_512_256": "sha512", "AES_XCBC_96": "aesxcbc",
    "PRF_HMAC_SHA1": "prfsha1", "PRF_HMAC_MD5": "prfmd5", "PRF_HMAC_SHA2_256": "prfsha256",
    "PRF_HMAC_SHA2_384": "prfsha384", "PRF_HMAC_SHA2_512": "prfsha512",
    "MODP_1024": "modp1024", "MODP_1536": "modp1536", "MODP_2048": "modp2048", "MODP_3072": "modp3072",
    "MODP_4096": "modp4096", "ECP_256": "ecp256", "ECP_384": "ecp384", "ECP_521": "ecp521",
    "CURVE_25519": "x25519", "CURVE25519": "x25519", "CURVE_448": "x448", "CURVE448": "x448",
}


def transform_kind(name: str) -> str:
    """ENCR, INTEG, PRF, KE or ESN for a transform name like strongSwan logs it."""
    n = name.upper()
    if n.startswith("PRF_"):
        return "PRF"
    if n in ("NO_EXT_SEQ", "EXT_SEQ", "ESN", "NO_ESN"):
        return "ESN"
    if n.startswith(("MODP_", "ECP_", "CURVE", "BRAINPOOL", "ML_KEM", "X25519", "X448")):
        return "KE"
    if n.startswith(("HMAC_", "AES_XCBC", "AES_CMAC", "AES_128_GMAC", "AES_192_GMAC", "AES_256_GMAC")):
        return "INTEG"
    return "ENCR"


def split_proposal(text: str) -> tuple[str, list[str]]:
    """'IKE:AES_CBC_128/HMAC_SHA1_96/...' -> ('IKE', ['AES_CBC_128', 'HMAC_SHA1_96', ...])."""
    proto, _, rest = text.partition(":")
    if not rest:
        proto, rest = "", text
    return proto, [t for t in rest.split("/") if t]


@dataclass(frozen=True)
class MarkedTransform:
    name: str
    kind: str
    matched: bool
    """Some proposal on the other side offers this transform (for its kind)."""


def mark_proposals(ours: tuple[str, ...], theirs: tuple[str, ...]) -> tuple[list[list[MarkedTransform]],
                                                                             list[list[MarkedTransform]]]:
    """Each side's proposals with every transform marked matched or not by the other side."""

    def offered(side: tuple[str, ...]) -> set[str]:
        return {t for p in side for t in split_proposal(p)[1]}

    def mark(side: tuple[str, ...], other: set[str]) -> list[list[MarkedTransform]]:
        return [[MarkedTransform(t, transform_kind(t), t in other) for t in split_proposal(p)[1]] for p in side]

    return mark(ours, offered(theirs)), mark(theirs, offered(ours))


def keyword_proposal(text: str) -> str:
    """A strongSwan proposal keyword string for an engine proposal text (best effort)."""
    _, transforms = split_proposal(text)
    words = [_KEYWORDS.get(t, t.lower()) for t in transforms if transform_kind(t) != "ESN"]
    return "-".join(words)


def _proposal_table(ours: tuple[str, ...], theirs: tuple[str, ...], ok: str, bad: str) -> Table:
    mo, mt = mark_proposals(ours, theirs)
    table = Table(expand=True, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    # Folded, never cut: at 80x24 "PRF_HMAC_SHA2_3…" hid the 256 / 384 the failure was about.
    table.add_column("Our proposals", ratio=1, overflow="fold")
    table.add_column("The peer's proposals", ratio=1, overflow="fold")

    def cell(props: list[list[MarkedTransform]]) -> Text:
        t = Text()
        for i, p in enumerate(props):
            if i:
                t.append("\n")
            t.append(f"#{i + 1} ", style="bold")
            for tr in p:
                mark, style = ("✓", ok) if tr.matched else ("✗", bad)
                t.append(f" {mark}{tr.name}", style=style)
        return t

    left = cell(mo) if mo else Text("(not known)", style="dim")
    right = cell(mt) if mt else Text("(not known: the peer only said NO_PROPOSAL_CHOSEN)", style="dim")
    table.add_row(left, right)
    return table


def _ts_table(f: NegotiationFailed) -> Table:
    table = Table(expand=True, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    if f.sent_by_peer:  # we initiated: our local_ts went out as TSi, our remote_ts as TSr
        table.add_column("Our side (local_ts → TSi)", ratio=1, overflow="fold")
        table.add_column("Peer's side (remote_ts → TSr)", ratio=1, overflow="fold")
    else:  # we responded: the engine gives our CHILD configs, then what the peer proposed
        # Folded, never cut: "198.51.100.0/26[…" hid the protocol and port the peer refused.
        table.add_column("Our CHILD configs (local_ts === remote_ts)", ratio=1, overflow="fold")
        table.add_column("The peer proposed (TSi === TSr)", ratio=1, overflow="fold")
    # Text, not str: Rich would read "[tcp/443]" as markup.
    table.add_row(Text("\n".join(f.local_ts) or "(none)"), Text("\n".join(f.remote_ts) or "(none)"))
    return table


def _child_key(f: NegotiationFailed) -> str:
    return f"connections.{f.connection}.children.{f.child}" if f.child else f"connections.{f.connection}.children.*"


def _ids_seen(exchanges) -> tuple[str, str]:
    """(our ID, the peer's ID) as seen in IKE_AUTH payloads, if any."""
    ours = theirs = ""
    for ev in exchanges:
        for d in ev.message.details:
            if d.name in ("IDi", "IDr"):
                value = dict(d.fields).get("id", "")
                sent = isinstance(ev, ExchangeSent)
                if d.name == "IDi" and not ev.message.response:
                    if sent:
                        ours = ours or value
                    else:
                        theirs = theirs or value
                elif d.name == "IDr" and ev.message.response:
                    if isinstance(ev, ExchangeReceived):
                        theirs = theirs or value
                    else:
                        ours = ours or value
    return ours, theirs


def _unset(key: str, example: str = "") -> str:
    """What a proposals key means when the policy leaves it out: the fix must not make an admin write
    a one-item list in its place (that drops every default suite the tunnel works with today)."""
    keep = f'{key} = ["default", "{example}"]' if example else f'{key} = ["default", ...]'
    return (f' When {key} is not set it means ["default"] (strongSwan\'s default suites): write {keep} to '
            "keep them.")


TS_DEFAULT = ("(local_ts and remote_ts not set are \"dynamic\": our own address and the peer's, those of the "
              "IKE SA.)")


def unresolved_is_ours(f: NegotiationFailed) -> bool:
    """An UNRESOLVED failure for our own address's host name (local_addrs, charon's resolve_me),
    not the peer's: the reason names the key of the name that failed."""
    return f.notify.upper() == "UNRESOLVED" and f"connections.{f.connection}.local_addrs" in (f.reason or "")


def explain(f: NegotiationFailed, exchanges=(), colors: dict[str, str] | None = None,
            configured_ids: tuple[str, str] = ("", "")) -> RenderableType:
    """A renderable explanation of ``f``: what happened, why, and the fix.

    ``configured_ids``: (local id, remote id) of the connection's configuration,
    shown when the exchanges did not carry them.
    """
    # Everything below quotes what a peer (or an attached daemon) sent: controls as escapes, and
    # drawn as Text, never markup.
    f = replace(f, notify=escape(f.notify), exchange=escape(f.exchange), reason=escape(f.reason or ""),
                local_proposals=tuple(map(escape, f.local_proposals)),
                remote_proposals=tuple(map(escape, f.remote_proposals)),
                local_ts=tuple(map(escape, f.local_ts)), remote_ts=tuple(map(escape, f.remote_ts)))
    configured_ids = (escape(configured_ids[0]), escape(configured_ids[1]))
    colors = colors or {}
    ok = colors.get("success", "green")
    bad = f"bold {colors.get('error', 'red')}"
    head = Text()
    notify = f.notify.upper()
    ours = unresolved_is_ours(f)
    if ours:
        who = "nothing was sent: our address's host name did not resolve"
    elif notify == "UNRESOLVED":
        who = "nothing was sent: the peer's host name did not resolve"  # no peer to reject, or be rejected by
    elif notify in ("TIMEOUT", "RETRANSMIT_TIMEOUT"):
        who = "the peer did not answer"
    else:
        who = "The peer rejected us" if f.sent_by_peer else "We rejected the peer"
    head.append(f"✗ {f.notify}", style=bad)
    head.append(f" in {f.exchange} — {who}.\n")
    if f.reason:
        # A sentence starts with a capital, unless it starts with a name (a host, an ID): kept as sent.
        first = f.reason.split(" ", 1)[0].replace("'", "").replace("-", "")
        text = f.reason[0].upper() + f.reason[1:] if first.isalpha() else f.reason
        head.append(text + ("\n" if text.endswith((".", "!", "?")) else ".\n"))
    parts: list[RenderableType] = [head]
    fix = Text()
    fix.append("Fix: ", style="bold")
    if notify == "NO_PROPOSAL_CHOSEN":
        ike = f.exchange == "IKE_SA_INIT"
        key = f"connections.{f.connection}.proposals" if ike else f"{_child_key(f)}.esp_proposals"
        parts.append(Text("✗ marks a transform the other side does not offer:", style="dim"))
        parts.append(_proposal_table(f.local_proposals, f.remote_proposals, ok, bad))
        fix.append("the two lists share no complete proposal (every ✗ has no counterpart). ")
        if f.remote_proposals:
            suggestion = keyword_proposal(f.remote_proposals[0])
            fix.append("Best: configure the peer with one of our proposals. Or accept one of its proposals "
                       f"by adding it to {key}, e.g. \"{suggestion}\" — check the lint warnings first: "
                       "weak algorithms are weak for every tunnel that accepts them." + _unset(key, suggestion))
        else:
            fix.append(f"compare {key} with the peer's configuration; the peer did not say what it has. "
                       f"({key} not set is [\"default\"]: strongSwan's default suites.)")
    elif notify == "TS_UNACCEPTABLE":
        parts.append(_ts_table(f))
        if f.sent_by_peer:
            fix.append("the peer's policy does not cover these selectors. On the peer, its remote_ts must "
                       "include our local side and its local_ts our remote side; or narrow "
                       f"{_child_key(f)}.local_ts / remote_ts to what the peer allows. " + TS_DEFAULT)
        else:
            fix.append("our policy does not cover the selectors the peer proposed (its TSi is its side, its "
                       f"TSr ours). Make {_child_key(f)}.remote_ts cover the peer's TSi and local_ts its "
                       "TSr; or narrow the peer's selectors to what we allow. " + TS_DEFAULT)
    elif notify in ("AUTHENTICATION_FAILED", "AUTH_FAILED"):
        ours, theirs = map(escape, _ids_seen(exchanges))
        ids = Table.grid(padding=(0, 2))
        ids.add_column(style="bold")
        ids.add_column(overflow="fold")  # a key path is one long word: folded, not cut (80x24)
        ids.add_row(Text("our ID"), Text((ours + " (sent)") if ours else
                    (configured_ids[0] or "our address") + f" (connections.{f.connection}.local.id)"))
        ids.add_row(Text("peer's ID"), Text((theirs + " (received)") if theirs else
                    (configured_ids[1] or "the peer's address") + f" (expected: connections.{f.connection}.remote.id)"))
        parts.append(ids)
        if f.sent_by_peer:
            fix.append(f"the peer could not verify us. Check that the peer expects our ID as shown above "
                       f"(connections.{f.connection}.local.id), and that both sides hold the same pre-shared "
                       f"key for these IDs (our secrets file, [ike.*] entry whose ids include the peer's ID). "
                       "With certificates: the peer must trust our CA and our certificate must carry our ID.")
        else:
            fix.append(f"we could not verify the peer. Check connections.{f.connection}.remote.id against the "
                       "ID the peer sent, and that our secrets file has the same PSK as the peer for that ID "
                       "(or that remote.cacerts holds the CA of the peer's certificate).")
    elif ours:
        fix.append(f"check the host name in connections.{f.connection}.local_addrs (a typo?), and that this "
                   "host's DNS (or /etc/hosts) answers for it (getent hosts NAME); or put this host's address "
                   "there instead of its name.")
    elif notify == "UNRESOLVED":
        fix.append(f"check the host name in connections.{f.connection}.remote_addrs (a typo?), and that this "
                   "host's DNS answers for it (getent hosts NAME); or put the peer's address there instead "
                   "of its name.")
    elif notify in ("TIMEOUT", "RETRANSMIT_TIMEOUT"):
        fix.append("the peer never answered. Check that it is reachable on UDP 500/4500 (firewalls, NAT), "
                   f"that connections.{f.connection}.remote_addrs is right, and that the peer runs IKEv2.")
    elif notify in ("INVALID_KE_PAYLOAD",):
        fix.append("the peer wants another key-exchange group first; put the group it asks for first in "
                   f"connections.{f.connection}.proposals (the engine retries on its own)."
                   + _unset(f"connections.{f.connection}.proposals"))
    elif notify in ("SINGLE_PAIR_REQUIRED",):
        fix.append("the peer accepts only one address pair per CHILD SA: split the CHILD into one per "
                   "selector pair.")
    else:
        fix.append("see the exchanges above for the notify and its data; the log screen has the engine's "
                   "reasoning for this IKE SA.")
    parts.append(fix)
    return Group(*parts)
