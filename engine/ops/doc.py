"""``ipsec-console doc CONFIG``: a policy documented for auditors (Markdown or HTML).

Per connection: who talks to whom, the networks, protocols and ports each
child protects, every IKE and ESP/AH algorithm with its strength in bits and
what a quantum computer does to it (engine.ops.strength), authentication and
where its keys and certificates live and when they expire; then the rules'
decisions in evaluation order (the SPD), the lint findings and a diagram.

The output depends only on the policy and its files (and, for days left
before a certificate expires, on ``now``), so docs/examples can be
regenerated and compared. Secret values never appear: a PSK is named by its
``[ike.NAME]`` entry only.
"""

from __future__ import annotations

import html
import os
from datetime import datetime
from pathlib import Path

from engine.crypto.transforms import TransformType
from engine.ops.credentials import credential_files, utc_now
from engine.ops.strength import Strength, strength, suite_strength
from engine.ops.version import engine_version
from engine.policy.findings import Finding
from engine.policy.identity import identity_for_address
from engine.policy.lint import lint
from engine.policy.model import ConnectionConfig, Policy, Proposal
from engine.policy.parse import load_policy, single_host
from engine.policy.secrets import secrets_for
from engine.policy.spd import Spd
from engine.policy.ts import PROTOCOL_NUMBERS, TrafficSelector

Block = tuple


# -- facts -----------------------------------------------------------------------------------------------
def _strengths(p: Proposal) -> dict[str, list[Strength]]:
    out: dict[str, list[Strength]] = {"encr": [], "integ": [], "prf": [], "ke": [], "additional_ke": []}
    for key, ttype in (("encr", TransformType.ENCR), ("integ", TransformType.INTEG), ("prf", TransformType.PRF),
                       ("ke", TransformType.KE)):
        for t in getattr(p, key):
            out[key].append(strength(ttype, t.id, t.key_length))
    # RFC 9370: every additional key exchange is done on top of the first one.
    for t in getattr(p, "additional_ke", ()):
        out["additional_ke"].append(strength(TransformType.KE, t.id))
    return out


def _suite(s: dict[str, list[Strength]], ike: bool = True) -> tuple[int, str]:
    """Weakest link and quantum verdict; a post-quantum additional KE protects even a classical first KE.
    A CHILD SA's keys come from the IKE SA's SK_d (judged in the IKE proposals): its PFS group only
    adds a secret, so a classical one does not make its verdict "no"."""
    extra = s["additional_ke"]
    bits, quantum = suite_strength(s["encr"] + s["integ"] + s["prf"] + s["ke"] + extra)
    if not ike and quantum == "no" and s["encr"]:
        _, quantum = suite_strength(s["encr"] + s["integ"] + extra)
    if quantum == "no" and any(x.quantum == "yes" for x in extra):
        others = [x.quantum for x in s["encr"] + s["integ"] + s["prf"]]
        quantum = "weakened" if "weakened" in others else "yes"
    return bits, quantum


def _names(items: list[Strength]) -> str:
    return ", ".join(f"{s.name} [{s.bits}]" if s.bits else s.name for s in items) or "-"


def proposal_row(p: Proposal, *, ike: bool) -> list[str]:
    s = _strengths(p)
    bits, quantum = _suite(s, ike)
    row = [p.text, _names(s["encr"]), _names(s["integ"]) if s["integ"] else ("(AEAD)" if s["encr"] else "-")]
    if ike:
        row.append(_names(s["prf"]))
    ke = _names(s["ke"]) if s["ke"] else ("-" if ike else "none (no PFS)")
    if s["additional_ke"]:
        ke += " + " + " + ".join(_names([x]) for x in s["additional_ke"])
    row.append(ke)
    row += [str(bits), quantum]
    return row


def ts_protocols(ts: tuple[TrafficSelector, ...]) -> str:
    parts = []
    for t in ts:
        proto = PROTOCOL_NUMBERS.get(t.protocol, str(t.protocol)) if t.protocol else "any protocol"
        if t.protocol in (1, 58) and not (t.start_port == 0 and t.end_port == 65535):
            ports = f" type {t.start_port >> 8}" if t.start_port >> 8 == t.end_port >> 8 else " some types"
        elif t.start_port == 0 and t.end_port == 65535:
            ports = ""
        elif t.start_port == t.end_port:
            ports = f" port {t.start_port}"
        else:
            ports = f" ports {t.start_port}-{t.end_port}"
        parts.append(f"{proto}{ports}")
    return ", ".join(dict.fromkeys(parts))


def _networks(ts: tuple[TrafficSelector, ...], addrs: tuple[str, ...]) -> str:
    out = []
    for t in ts:
        if t.dynamic:
            host = single_host(addrs)
            out.append(f"dynamic ({host})" if host else "dynamic (the IKE address)")
        else:
            text = str(t)
            out.append(text.split("[", 1)[0])
    return ", ".join(dict.fromkeys(out))


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s and s % 86400 == 0:
        return f"{s // 86400}d"
    if s and s % 3600 == 0:
        return f"{s // 3600}h"
    if s >= 60:
        return f"{s // 60}m" + (f"{s % 60}s" if s % 60 else "")
    return f"{seconds:g}s"


def _peer(c: ConnectionConfig) -> str:
    ident = str(c.remote.id) if c.remote.id is not None else None
    addrs = ", ".join(c.remote_addrs) or "any address"
    if ident is None or ident == "%any":
        return f"any peer at {addrs}" if addrs != "any address" else "any peer"
    return f"`{ident}` at {addrs}"


def _me(c: ConnectionConfig) -> str:
    ident = str(c.local.id) if c.local.id is not None else "its IKE address"
    return f"`{ident}` at {', '.join(c.local_addrs) or 'any local address'}"


def _role(c: ConnectionConfig) -> str:
    starts = [k.name for k in c.children if k.start_action == "start"]
    traps = [k.name for k in c.children if k.start_action == "trap"]
    if starts:
        return f"this host initiates at start ({', '.join(starts)})"
    if traps:
        return f"this host initiates on the first matching packet ({', '.join(traps)})"
    return "this host only answers: the peer initiates"


def _psk_source(policy: Policy, c: ConnectionConfig) -> str:
    local = c.local.id or (identity_for_address(h) if (h := single_host(c.local_addrs)) else None)
    remote = c.remote.id or (identity_for_address(h) if (h := single_host(c.remote_addrs)) else None)
    entries = secrets_for(policy.secrets, local, remote)
    where = policy.engine.secrets or "(no secrets file)"
    if not entries:
        return f"PSK: no matching entry in `{where}`"
    return "PSK from " + ", ".join(f"`[ike.{e.name}]`" for e in entries) + f" in `{where}` (the value is not shown)"


def _ppk(policy: Policy, c: ConnectionConfig) -> str | None:
    ppk_id = getattr(c, "ppk_id", None)
    if not ppk_id:
        return None
    names = [p.name for p in getattr(policy.secrets, "ppk", ()) if p.id == ppk_id]
    where = ", ".join(f"`[ppk.{n}]`" for n in names) or "no matching `[ppk.*]` entry"
    need = "required" if getattr(c, "ppk_required", False) else "used when the peer has it"
    return f"Postquantum Preshared Key `{ppk_id}` (RFC 8784, {need}) from {where}"


def _auth_rows(policy: Policy, c: ConnectionConfig) -> list[list[str]]:
    rows = []
    for side, a in (("this host", c.local), ("peer", c.remote)):
        ident = str(a.id) if a.id is not None else "its IKE address"
        if a.auth == "psk":
            creds = _psk_source(policy, c)
        elif side == "this host":
            creds = "certificate " + ", ".join(f"`{x}`" for x in a.certs)
            keys = [p for p in policy.secrets.private]
            if keys:
                creds += "; private key " + ", ".join(f"`[private.{p.name}]`" for p in keys)
        else:
            creds = ("a certificate signed by " + ", ".join(f"`{x}`" for x in a.cacerts)) if a.cacerts else \
                "a certificate of any trusted CA"
        rows.append([side, "certificate (pubkey)" if a.auth == "pubkey" else "pre-shared key", f"`{ident}`", creds])
    return rows


def _child_rows(c: ConnectionConfig) -> list[list[str]]:
    rows = []
    for k in c.children:
        life = f"rekey {_duration(k.rekey_time)}, expire {_duration(k.life_time)}"
        if k.rekey_bytes:
            life += f", rekey after {k.rekey_bytes} bytes"
        rows.append([f"`{k.name}`", _networks(k.local_ts, c.local_addrs), _networks(k.remote_ts, c.remote_addrs),
                     ts_protocols(k.local_ts + k.remote_ts), f"{k.protocol.upper()} {k.mode}",
                     k.start_action, k.dpd_action, k.close_action, life])
    return rows


# -- the document -------------------------------------------------------------------------------------------
def document(policy: Policy, findings: list[Finding], *, now: datetime | None = None) -> list[Block]:
    now = now or utc_now()
    name = os.path.basename(policy.path) if policy.path else "policy"
    e = policy.engine
    blocks: list[Block] = [("h1", f"IPsec policy `{name}`")]
    blocks.append(("p", f"Generated by ipsec-console {engine_version()} from `{name}`. "
                   f"{len(policy.connections)} connection(s), {sum(len(c.children) for c in policy.connections)} "
                   f"child(ren), {len(policy.rules)} rule(s)."))
    blocks.append(("table", ["engine", "value"], [
        ["datapath", e.datapath],
        ["listens on", ", ".join(e.listen) or "every address"],
        ["IKE ports", f"UDP {e.ike_port}, NAT-T UDP {e.natt_port}"],
        ["secrets file", f"`{e.secrets}`" if e.secrets else "none"],
        ["CRLs", ", ".join(f"`{x}`" for x in e.crls) or "none"],
    ]))
    blocks.append(("h2", "Overview"))
    blocks.append(("diagram", policy))
    summary = []
    for c in policy.connections:
        suites = [_suite(_strengths(p)) for p in c.proposals]
        for k in c.children:
            suites += [_suite(_strengths(p), ike=False) for p in k.proposals]
        weakest = min((b for b, _ in suites), default=0)
        quantum = "broken" if any(q == "broken" for _, q in suites) else "no" if any(q == "no" for _, q in suites) \
            else "weakened" if any(q == "weakened" for _, q in suites) else "yes"
        summary.append([f"`{c.name}`", _me(c), _peer(c), ", ".join(f"`{k.name}`" for k in c.children) or "none",
                        f"{weakest} bits", quantum])
    if summary:
        blocks.append(("table", ["connection", "this host", "peer", "children", "weakest offer", "quantum-safe"],
                       summary))
    for c in policy.connections:
        blocks += _connection(policy, c)
    blocks += _rules(policy)
    blocks += _credentials(policy, now)
    blocks.append(("h2", "Lint findings"))
    if findings:
        blocks.append(("table", ["severity", "where", "rule", "finding"],
                       [[f.severity, f"`{f.key_path or f.file}`", f.rule or "-", f.message] for f in findings]))
    else:
        blocks.append(("p", "None: the policy passes every check of `ipsec-console check`."))
    blocks.append(("h2", "Strength and quantum-safety"))
    blocks.append(("p", "Bits [in brackets]: security against a classical attacker (NIST SP 800-57); a suite is as "
                   "strong as its "
                   "weakest part. Quantum-safe: *yes* (256-bit symmetric keys, hashes, ML-KEM), *weakened* "
                   "(128-bit symmetric keys: Grover's search halves them), *no* (Diffie-Hellman and elliptic "
                   "curves: Shor's algorithm breaks them, so recorded traffic can be decrypted later), *broken* "
                   "(unsafe today)."))
    return blocks


def _connection(policy: Policy, c: ConnectionConfig) -> list[Block]:
    out: list[Block] = [("h2", f"Connection `{c.name}`")]
    out.append(("p", f"{_me(c)} ⇄ {_peer(c)}, IKEv2 on UDP {c.local_port} → {c.remote_port} "
                f"(NAT-T {c.remote_natt_port}); {_role(c)}."))
    out.append(("h3", "Authentication"))
    out.append(("table", ["side", "method", "identity", "credentials"], _auth_rows(policy, c)))
    out.append(("h3", "IKE algorithms (in order of preference)"))
    out.append(("table", ["proposal", "encryption", "integrity", "PRF", "key exchange", "bits", "quantum-safe"],
                [proposal_row(p, ike=True) for p in c.proposals]))
    facts = [f"IKE SA rekeyed every {_duration(c.rekey_time)} (minus up to {_duration(c.rand_time)} of jitter), "
             f"deleted {_duration(c.over_time)} later if that fails",
             f"dead peer detection every {_duration(c.dpd_delay)} of silence" if c.dpd_delay else
             "no dead peer detection",
             "UDP encapsulation forced" if c.encap else "UDP encapsulation when a NAT is detected",
             f"MOBIKE {'on (both roles: we follow our address changes and our peers)' if c.mobike else 'off'}, IKE fragmentation {'on' if c.fragmentation else 'off'}"]
    ppk = _ppk(policy, c)
    if ppk:
        facts.append(ppk)
    out.append(("list", facts))
    out.append(("h3", "Children (what is protected)"))
    if c.children:
        out.append(("table", ["child", "local networks", "remote networks", "protocols and ports", "protection",
                              "start", "on dead peer", "on peer close", "lifetime"], _child_rows(c)))
        out.append(("table", ["child", "proposal", "encryption", "integrity", "PFS", "bits", "quantum-safe"],
                    [[f"`{k.name}`", *proposal_row(p, ike=False)] for k in c.children for p in k.proposals]))
    else:
        out.append(("p", "None: this connection carries no traffic."))
    return out


def _rules(policy: Policy) -> list[Block]:
    out: list[Block] = [("h2", "Rules and decisions")]
    out.append(("p", "Every packet is decided by the first entry that matches, in this order (lower priority number "
                "first; for equal priorities discard, then bypass, then protect)."))
    rows = []
    spd = Spd(policy)
    for n, entry in enumerate(spd.entries(include_implicit=True), 1):
        decision = {"protect": f"protect ({(entry.ipsec_protocol or 'esp').upper()} {entry.mode or 'tunnel'})",
                    "bypass": "bypass (in clear)", "discard": "discard (drop)"}[entry.action]
        prio = "0 (always first)" if entry.implicit else f"{entry.priority}" + (
            " (explicit)" if entry.explicit_priority else "")
        rows.append([str(n), prio, decision, f"`{entry.local}`", f"`{entry.remote}`", entry.name])
    out.append(("table", ["#", "priority", "decision", "local", "remote", "from"], rows))
    templates = getattr(spd, "templates", None)
    if callable(templates):
        tmpl = [t for t in templates()]
        if tmpl:
            out.append(("p", "Decided once an SA exists (selectors that depend on the negotiated addresses): "
                        + "; ".join(f"{t.name}: `{t.local}` ⇄ `{t.remote}`" for t in tmpl) + "."))
    out.append(("p", "Traffic no entry matches is not managed by this policy: it passes unprotected."))
    return out


def _credentials(policy: Policy, now: datetime) -> list[Block]:
    out: list[Block] = [("h2", "Keys and certificates")]
    rows = []
    for f in credential_files(policy):
        if f.not_after is not None:
            left = f.days_left(now)
            expires = f"{f.not_after:%Y-%m-%d}" + (" (expired)" if left < 0 else f" ({int(left)} days left)")
        else:
            expires = "-"
        what = ", ".join(x for x in (f.subject and f"subject {f.subject}", f.key,
                                     f.issuer and f.issuer != f.subject and f"issued by {f.issuer}") if x) or "-"
        rows.append([f"`{f.path}`", f.role, what, expires, f.mode or "-", f.problem or "ok"])
    if rows:
        out.append(("table", ["file", "used as", "what", "expires", "mode", "state"], rows))
    else:
        out.append(("p", "None: the policy names no key, certificate or secrets file."))
    return out


# -- diagram ------------------------------------------------------------------------------------------------
def _links(policy: Policy) -> list[tuple[str, str, str]]:
    """(connection, peer label, link label) per connection."""
    out = []
    for c in policy.connections:
        peer = (str(c.remote.id) if c.remote.id is not None and str(c.remote.id) != "%any" else "any peer")
        peer += " @ " + (", ".join(c.remote_addrs) or "%any")
        kids = "; ".join(f"{k.name}: {_networks(k.local_ts, c.local_addrs)} <=> "
                         f"{_networks(k.remote_ts, c.remote_addrs)}" for k in c.children) or "no children"
        auth = "PSK" if c.remote.auth == "psk" else "certificates"
        out.append((c.name, peer, f"{c.name} ({auth}): {kids}"))
    return out


def _me_label(policy: Policy) -> str:
    ids = sorted({str(c.local.id) for c in policy.connections if c.local.id is not None})
    addrs = list(policy.engine.listen) or sorted({a for c in policy.connections for a in c.local_addrs})
    return "this host" + (f" {', '.join(ids)}" if ids else "") + (f" @ {', '.join(addrs)}" if addrs else "")


def diagram_text(policy: Policy) -> str:
    lines = [f"[ {_me_label(policy)} ]"]
    links = _links(policy)
    for i, (_name, peer, label) in enumerate(links):
        last = i == len(links) - 1
        lines.append("   |")
        lines.append(f"   {'`' if last else '+'}--- {label}")
        lines.append(f"   {' ' if last else '|'}      ---> [ {peer} ]")
    if policy.rules:
        lines.append("")
        lines.append("rules: " + ", ".join(f"{r.name} ({r.action})" for r in policy.rules))
    return "\n".join(lines)


def diagram_mermaid(policy: Policy) -> str:
    def q(text: str) -> str:
        return text.replace('"', "'")

    lines = ["flowchart LR", f'  me["{q(_me_label(policy))}"]']
    for i, (_name, peer, label) in enumerate(_links(policy)):
        lines.append(f'  p{i}["{q(peer)}"]')
        lines.append(f'  me -- "{q(label)}" --- p{i}')
    return "\n".join(lines)


def diagram_svg(policy: Policy) -> str:
    """This host on the left, one row per connection: an elbow line to the peer, labelled with the
    connection, its authentication and the networks of its children."""
    links = _links(policy)
    row, width = 64, 980
    height = max(1, len(links)) * row + 24
    me_y = height // 2
    me = _me_label(policy)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="connections of this host" '
             'font-family="sans-serif" font-size="12">',
             f'<rect x="10" y="{me_y - 24}" width="300" height="48" rx="6" fill="#e8f0fe" stroke="#1a73e8"/>',
             f'<text x="20" y="{me_y - 4}">this host</text>',
             f'<text x="20" y="{me_y + 13}" font-size="11">{html.escape(me.removeprefix("this host ")[:46])}</text>']
    for i, (name, peer, label) in enumerate(links):
        y = 12 + i * row + row // 2 + 8
        detail = label.split(": ", 1)[1] if ": " in label else label
        parts.append(f'<path d="M310 {me_y} H330 V{y} H690" fill="none" stroke="#555"/>')
        parts.append(f'<text x="345" y="{y - 20}" font-weight="bold">{html.escape(label.split(":", 1)[0][:50])}</text>')
        parts.append(f'<text x="345" y="{y - 6}" font-size="11" fill="#333">{html.escape(detail[:58])}</text>')
        parts.append(f'<rect x="690" y="{y - 18}" width="280" height="36" rx="6" fill="#fef7e0" stroke="#e37400"/>')
        parts.append(f'<text x="700" y="{y + 4}" font-size="11">{html.escape(peer[:44])}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# -- rendering -----------------------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {b[1]}\n")
        elif kind == "p":
            out.append(b[1] + "\n")
        elif kind == "list":
            out.append("\n".join(f"- {x}" for x in b[1]) + "\n")
        elif kind == "table":
            headers, rows = b[1], b[2]
            out.append("| " + " | ".join(headers) + " |\n| " + " | ".join("---" for _ in headers) + " |\n"
                       + "".join("| " + " | ".join(_md_cell(c) for c in r) + " |\n" for r in rows))
        elif kind == "diagram":
            out.append("```mermaid\n" + diagram_mermaid(b[1]) + "\n```\n")
            out.append("```text\n" + diagram_text(b[1]) + "\n```\n")
    return "\n".join(out)


def _inline_html(text: str) -> str:
    """Escape, then turn `code` and *emphasis* into tags."""
    parts = html.escape(text).split("`")
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{part}</code>")
        else:
            em = part.split("*")
            out.append("".join(f"<em>{x}</em>" if j % 2 else x for j, x in enumerate(em)))
    return "".join(out)


def render_html(blocks: list[Block], title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #bbb;padding:.25em .5em;"
           "text-align:left;vertical-align:top}th{background:#f0f0f0}code{background:#f5f5f5;padding:0 .2em}"
           "pre{background:#f8f8f8;padding:.5em;overflow:auto}</style>", "</head>", "<body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{_inline_html(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in b[1]) + "</tr></thead>"
                       "<tbody>" + "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>"
                                           for r in b[2]) + "</tbody></table>")
        elif kind == "diagram":
            out.append("<figure>" + diagram_svg(b[1]) + f"<pre>{html.escape(diagram_text(b[1]))}</pre></figure>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def document_policy(policy: Policy, *, fmt: str = "md", now: datetime | None = None) -> str:
    blocks = document(policy, lint(policy), now=now)
    if fmt == "html":
        return render_html(blocks, f"IPsec policy {os.path.basename(policy.path or 'policy')}")
    return render_markdown(blocks)


def document_file(path: str | os.PathLike, *, fmt: str = "md", now: datetime | None = None) -> str:
    """The documentation of a policy file (its secrets file is read for PSK names, never shown).
    Raises PolicyError when the policy does not load."""
    policy = load_policy(Path(path), strict_secrets_mode=False)
    return document_policy(policy, fmt=fmt, now=now)
