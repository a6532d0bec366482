"""``ipsec-console audit CONFIG``: what an auditor asks of a running policy.

- connections, children and rules that matched no traffic for DAYS (from the
  usage counters the daemon keeps across restarts, engine.ops.usage; 0 days:
  never used while the engine watched);
- how old each PSK and private key is (PSK: since the engine first saw its
  current value; key: since its file last changed and its certificate was
  issued);
- certificates that expire within EXPIRY_DAYS (or already did);
- weak suites peers actually negotiated (not only offered);
- the latest entries of the change journal.

It reads the policy, its files and the state folder; it never contacts the daemon.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from engine.ops import journal, usage
from engine.ops.credentials import credential_files
from engine.ops.state import state_dir
from engine.policy.model import Policy
from engine.policy.parse import load_policy
from engine.printable import escape

DAY = 86400.0
# strongSwan names (as in `sas`) of algorithms that are weak today.
_WEAK = {"3DES": "3DES (64-bit blocks)", "DES": "DES", "NULL": "no encryption", "HMAC_MD5_96": "HMAC-MD5",
         "HMAC_MD5_128": "HMAC-MD5", "HMAC_SHA1_96": "HMAC-SHA1", "HMAC_SHA1_160": "HMAC-SHA1",
         "PRF_HMAC_MD5": "PRF-HMAC-MD5", "PRF_HMAC_SHA1": "PRF-HMAC-SHA1", "MODP_768": "MODP-768",
         "MODP_1024": "MODP-1024", "MODP_1536": "MODP-1536", "MODP_1024_160": "MODP-1024 (RFC 5114)",
         "MODP_2048_224": "MODP-2048 (RFC 5114)", "MODP_2048_256": "MODP-2048 (RFC 5114)", "ECP_192": "P-192",
         "ECP_224": "P-224"}


@dataclass(frozen=True)
class AuditOptions:
    unused_days: int = 30
    expiry_days: int = 30
    max_key_age_days: int = 365
    state: Path | None = None
    """State folder to read (default: the policy's, engine.ops.state)."""
    journal_entries: int = 10


def weak_parts(suite: str) -> list[str]:
    """The weak algorithms in a ``AES_CBC_128/HMAC_SHA1_96/...`` suite string."""
    out = []
    for part in suite.split("/"):
        name = _WEAK.get(part) or (_WEAK.get("3DES") if part.startswith("3DES") else None)
        if part.startswith(("AES_GCM_8", "AES_CCM_8")):
            name = "64-bit ICV"
        if name and name not in out:
            out.append(name)
    return out


def _when(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def audit(policy: Policy, options: AuditOptions = AuditOptions(), *, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    folder = options.state or state_dir(policy)
    name = usage.usage_name()
    data = usage.load(folder, name) if folder else usage.empty()
    cutoff = now - options.unused_days * DAY
    report: dict = {
        "policy": policy.path,
        "state": str(folder) if folder else None,
        "observed": {"first": _when(data["first_sample"]), "last": _when(data["last_sample"]),
                     "samples": data["samples"]},
        "unused_days": options.unused_days,
        "usage_file": name,
        "other_usage_files": usage.other_files(folder, name) if folder and not data["samples"] else [],
        "unused": [], "usage_unknown": [], "keys": [], "certificates": [], "weak_suites": [], "changes": [],
    }

    def unused(last: float | None) -> bool:
        return last is None or (options.unused_days > 0 and last < cutoff)

    if data["samples"]:
        for c in policy.connections:
            kids = [data["children"].get(usage.child_key(c.name, k.name), {}) for k in c.children]
            last = max((k.get("last_traffic") or 0 for k in kids), default=0) or None
            for k, entry in zip(c.children, kids):
                if unused(entry.get("last_traffic")):
                    report["unused"].append({"kind": "child", "name": f"{c.name}/{k.name}",
                                             "last_used": _when(entry.get("last_traffic")),
                                             "since": _when(entry.get("first_seen"))})
            if unused(last):
                up = data["connections"].get(c.name, {}).get("last_up")
                report["unused"].append({"kind": "connection", "name": c.name, "last_used": _when(last),
                                         "since": _when(data["connections"].get(c.name, {}).get("first_seen")),
                                         "last_up": _when(up)})
        for r in policy.rules:
            entry = data["rules"].get(r.name, {})
            if not entry.get("counted"):
                report["usage_unknown"].append({"kind": "rule", "name": r.name,
                                                "why": "the datapath does not count rule matches (kernel)"
                                                if entry else "not seen by the engine yet"})
            elif unused(entry.get("last_matched")):
                report["unused"].append({"kind": "rule", "name": r.name, "action": r.action,
                                         "last_used": _when(entry.get("last_matched")),
                                         "since": _when(entry.get("first_seen"))})
    # keys and certificates
    max_age = options.max_key_age_days * DAY
    for s in policy.secrets.ike:
        known = data["psks"].get(s.name)
        if known:
            since, basis = known.get("since"), "the engine first saw this value"
        else:
            try:
                since, basis = Path(policy.secrets.path or "").stat().st_mtime, "the secrets file last changed"
            except OSError:
                since, basis = None, "unknown"
        age = None if since is None else (now - since) / DAY
        report["keys"].append({"what": f"PSK [ike.{s.name}]", "age_days": None if age is None else int(age),
                               "since": _when(since), "basis": basis,
                               "too_old": age is not None and age * DAY > max_age})
    wall = datetime.fromtimestamp(now, timezone.utc)
    for f in credential_files(policy):
        if f.role.startswith("private key") and f.mtime is not None:
            age = (now - f.mtime) / DAY
            report["keys"].append({"what": f"{f.role} {f.path}", "age_days": int(age), "since": _when(f.mtime),
                                   "basis": "the key file last changed", "too_old": age * DAY > max_age})
        if f.not_after is not None:
            left = f.days_left(wall)
            if f.role.startswith("our certificate") and f.not_before is not None:
                age = (wall - f.not_before).total_seconds() / DAY
                report["keys"].append({"what": f"key of {f.path} ({f.key})", "age_days": int(age),
                                       "since": f"{f.not_before:%Y-%m-%d}", "basis": "its certificate was issued",
                                       "too_old": age * DAY > max_age})
            if left is not None and left <= options.expiry_days:
                report["certificates"].append({"file": f.path, "role": f.role, "subject": f.subject,
                                               "expires": f"{f.not_after:%Y-%m-%d}", "days_left": int(left),
                                               "expired": left < 0})
        elif f.problem and f.role.startswith(("our certificate", "trusted CA")):
            report["certificates"].append({"file": f.path, "role": f.role, "problem": f.problem})
    # negotiated suites
    for entry in data["suites"].values():
        for kind in ("ike", "child"):
            for suite, seen in entry.get(kind, {}).items():
                weak = weak_parts(suite)
                if weak:
                    report["weak_suites"].append({"connection": entry["connection"], "peer": entry["peer"],
                                                  "address": entry.get("remote_addr"), "sa": kind.upper(),
                                                  "suite": suite, "weak": weak, "last_seen": _when(seen["last_seen"])})
    entries: list[dict] = []
    if folder:
        try:
            entries = journal.read(folder)
        except OSError as exc:
            report["changes_problem"] = f"cannot read {folder / journal.JOURNAL}: {exc.strerror or exc}"
    for e in entries[-options.journal_entries:]:
        # A journal line is JSON someone may have edited: whatever its shape, one line of the report.
        who = e.get("who") if isinstance(e.get("who"), dict) else {}
        name = who.get("user", "?") if not who.get("login") or who.get("login") == who.get("user") else \
            f"{who['login']} (as {who.get('user')})"
        result = e.get("result") if isinstance(e.get("result"), dict) else {}
        what = "; ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in result.items()
                         if v)
        report["changes"].append({"time": e.get("time"), "who": name, "via": e.get("via"),
                                  "action": e.get("action"), "file": e.get("file"), "what": what})
    return report


def audit_file(path, options: AuditOptions = AuditOptions(), *, now: float | None = None) -> dict:
    """Raises PolicyError when the policy does not load."""
    return audit(load_policy(path, strict_secrets_mode=False), options, now=now)


def format_report(r: dict) -> str:
    out = [f"audit of {r['policy']}"]
    if not r["state"]:
        out.append("usage: no state folder, so no usage counters: set [engine] state_dir in the policy, or run "
                   "the daemon under systemd (StateDirectory=), then audit again after a while")
    elif not r["observed"]["samples"] and not os.path.isdir(r["state"]):
        out.append(f"usage: the state folder {r['state']} does not exist: no daemon has run this policy with "
                   f"it (check the path, or [engine] state_dir)")
    elif not r["observed"]["samples"] and r.get("other_usage_files"):
        # audit reads the counters of the network namespace it runs in (engine.ops.usage.usage_name)
        others = r["other_usage_files"]
        out.append(f"usage: no counters for this network namespace ({r.get('usage_file')}) in {r['state']}; "
                   f"it holds {', '.join(others)} of daemons in other namespaces: audit in the daemon's "
                   "namespace reads its counters"
                   + "".join(f" (ip netns exec {n} ipsec-console audit ...)"
                             for n in list(filter(None, map(usage.namespace_of, others)))[:1]))
    elif not r["observed"]["samples"]:
        out.append(f"usage: no counters in {r['state']} yet (the daemon writes them while it runs)")
    else:
        o = r["observed"]
        out.append(f"usage: observed from {o['first']} to {o['last']} ({o['samples']} samples, state {r['state']})")
        days = r["unused_days"]
        title = "never matched any traffic" if days == 0 else f"matched no traffic for {days} days"
        out.append(f"\n{title}:")
        for u in r["unused"] or []:
            last = f"last used {u['last_used']}" if u.get("last_used") else "never used"
            extra = f" (IKE SA last up {u['last_up']})" if u.get("last_up") else ""
            action = f" ({u['action']})" if u.get("action") else ""
            out.append(f"  {u['kind']:10} {u['name']}{action}: {last}, watched since {u['since']}{extra}")
        if not r["unused"]:
            out.append("  none")
        for u in r["usage_unknown"]:
            out.append(f"  {u['kind']:10} {u['name']}: usage unknown ({u['why']})")
    out.append("\nkeys:")
    for k in r["keys"]:
        age = "age unknown" if k["age_days"] is None else f"{k['age_days']} days old"
        flag = "  <- older than the limit: rotate it" if k["too_old"] else ""
        out.append(f"  {k['what']}: {age} (since {k['since']}: {k['basis']}){flag}")
    if not r["keys"]:
        out.append("  none")
    out.append("\ncertificates expiring soon or unusable:")
    for c in r["certificates"]:
        if "problem" in c:
            out.append(f"  {c['file']} ({c['role']}): {c['problem']}")
        else:
            when = "EXPIRED on" if c["expired"] else f"expires in {c['days_left']} days, on"
            out.append(f"  {c['file']} ({c['role']}, {c['subject']}): {when} {c['expires']}")
    if not r["certificates"]:
        out.append("  none")
    out.append("\nweak suites negotiated by peers:")
    for w in r["weak_suites"]:
        out.append(f"  {w['connection']} with {w['peer']} ({w['address']}), {w['sa']} SA: {w['suite']} "
                   f"({', '.join(w['weak'])}), last {w['last_seen']}")
    if not r["weak_suites"]:
        out.append("  none")
    out.append("\nlatest policy changes:")
    for c in r["changes"]:
        out.append(f"  {c['time']} {c['who']} via {c['via']}: {c['action']} {c['file']}"
                   + (f" ({c['what']})" if c["what"] else ""))
    if r.get("changes_problem"):
        out.append(f"  {r['changes_problem']}")
    elif not r["changes"]:
        out.append("  none recorded")
    # Peer names come from the usage file (an older one, or one edited by hand, may hold controls):
    # every line printed inert, line breaks kept.
    return "\n".join(escape(line) for line in "\n".join(out).split("\n"))
