"""The secrets file: PSKs and private keys, kept apart from the policy.

Shape (TOML)::

    [ike.branch]                      # any name
    ids = ["hq.example.org", "branch.example.org"]   # empty or absent: any identity
    secret = "a long random string"   # or 0x<hex>, or 0s<base64> (as in swanctl)

    [private.gw]
    file = "private/gw.key"           # relative to the secrets file
    passphrase = "..."                # optional

    [eap.alice]                       # an EAP user (EAP-MSCHAPv2), swanctl's secrets.eap
    id = "alice@example.org"          # the EAP identity (or a list of them)
    secret = "her password"

    [ppk.hq]                          # RFC 8784 Postquantum Preshared Key (swanctl secrets.ppk)
    id = "hq-ppk-2026"                # the PPK_ID; connections name it with ppk_id
    secret = "0x..."                  # at least 32 random bytes (hex or 0s base64)

The engine refuses a secrets file that group or others may read (unless the
policy is a lab), and nothing here ever puts a secret value into a message.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import tomllib
from pathlib import Path

from engine.policy._reader import Reader, key_path
from engine.policy.findings import Finding, syntax_finding
from engine.policy.identity import (
    MATCH_ANY,
    MATCH_NONE,
    IdentityError,
    identity_matches,
    match_level,
    parse_identity,
)
from engine.policy.model import EapSecret, Identity, IkeSecret, PpkSecret, PrivateKeySecret, Secrets
from engine.secret import Secret


def permission_problem(path: str | os.PathLike) -> str | None:
    """Why the file's mode is unsafe for secrets (readable or writable by group/others), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_IMODE(mode) & 0o077:
        return f"mode {stat.S_IMODE(mode):04o} lets group or others access it"
    return None


def _secret_value(text: str) -> bytes:
    """swanctl encodings: ``0x`` hex, ``0s`` base64, else the UTF-8 text. Raises ValueError."""
    if text.startswith(("0x", "0X")):
        return binascii.unhexlify(text[2:])
    if text.startswith(("0s", "0S")):
        return base64.b64decode(text[2:], validate=True)
    return text.encode()


def parse_secrets(text: str, file: str, base_dir: Path) -> tuple[Secrets, list[Finding]]:
    """Read secrets TOML text. Findings name keys, never values."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return Secrets(path=file), [syntax_finding(file, exc, text)]
    r = Reader(file, quote_values=False)
    r.check_keys(doc, "", ("ike", "private", "ppk", "eap"), what="section")
    ike: list[IkeSecret] = []
    seen_ids: dict[tuple[Identity, ...], str] = {}
    for name, entry in (r.table(doc, "ike", "") or {}).items():
        path = key_path("ike", name)
        if not isinstance(entry, dict):
            r.error(path, f"expected a table [ike.{name}] with ids and secret, got {type(entry).__name__}")
            continue
        r.check_keys(entry, path, ("ids", "secret"))
        ids: list[Identity] = []
        raw_ids = entry.get("ids", [])
        if isinstance(raw_ids, str):
            raw_ids = [raw_ids]
        if not isinstance(raw_ids, list) or not all(isinstance(i, str) for i in raw_ids):
            r.error(key_path(path, "ids"), "expected an array of identities (strings)")
            raw_ids = []
        for raw in raw_ids:
            try:
                ids.append(parse_identity(raw))
            except IdentityError as exc:
                r.error(key_path(path, "ids"), f"bad identity: {exc}")
        value = entry.get("secret")
        secret: Secret | None = None
        if value is None:
            r.error(key_path(path, "secret"), "missing: every [ike.*] entry needs secret = \"...\"")
        elif not isinstance(value, str):
            r.error(key_path(path, "secret"), f"expected a string, got {r._show(value)}")
        else:
            try:
                data = _secret_value(value)
            except (ValueError, binascii.Error):
                r.error(key_path(path, "secret"), "a value starting with 0x must be hex, with 0s base64")
            else:
                if not data:
                    r.error(key_path(path, "secret"), "empty secret")
                else:
                    secret = Secret(data)
        key = tuple(sorted(ids, key=lambda i: (i.kind, i.value.lower())))
        if key in seen_ids:
            r.error(key_path(path, "ids"), f"the same identities as [ike.{seen_ids[key]}]: which secret "
                    "applies would be ambiguous; merge the two entries")
        else:
            seen_ids[key] = name
        if secret is not None:
            ike.append(IkeSecret(name=name, ids=tuple(ids), secret=secret))
    private: list[PrivateKeySecret] = []
    for name, entry in (r.table(doc, "private", "") or {}).items():
        path = key_path("private", name)
        if not isinstance(entry, dict):
            r.error(path, f"expected a table [private.{name}] with file (and passphrase)")
            continue
        r.check_keys(entry, path, ("file", "passphrase"))
        f = entry.get("file")
        if not isinstance(f, str) or not f:
            r.error(key_path(path, "file"), "missing: the private key file, relative to the secrets file")
            continue
        pw = entry.get("passphrase")
        if pw is not None and not isinstance(pw, str):
            r.error(key_path(path, "passphrase"), f"expected a string, got {r._show(pw)}")
            pw = None
        private.append(PrivateKeySecret(name=name, file=f, passphrase=Secret(pw) if pw else None))
    ppk = _parse_ppks(r, doc)
    eap = _parse_eap(r, doc)
    return Secrets(ike=tuple(ike), private=tuple(private), path=file, ppk=ppk, eap=eap), r.findings


def _parse_eap(r: Reader, doc: dict) -> tuple[EapSecret, ...]:
    out: list[EapSecret] = []
    owner: dict[str, str] = {}
    for name, entry in (r.table(doc, "eap", "") or {}).items():
        path = key_path("eap", name)
        if not isinstance(entry, dict):
            r.error(path, f"expected a table [eap.{name}] with id and secret")
            continue
        r.check_keys(entry, path, ("id", "secret"))
        raw = entry.get("id")
        raw_ids = [raw] if isinstance(raw, str) else raw
        if not isinstance(raw_ids, list) or not raw_ids or not all(isinstance(i, str) and i.strip() for i in raw_ids):
            r.error(key_path(path, "id"), 'missing: the EAP identity this password is for, e.g. id = "alice@example.org"')
            continue
        ids: list[str] = []
        for text in raw_ids:
            ident = text.strip()
            if len(ident.encode()) > 253 or not ident.isprintable():
                r.error(key_path(path, "id"), "an EAP identity is 1 to 253 bytes of printable text")
                continue
            key = ident.lower()
            if key in owner:
                r.error(key_path(path, "id"), f"[eap.{owner[key]}] is for the same identity: which password "
                        "applies would be ambiguous")
                continue
            owner[key] = name
            ids.append(ident)
        value = entry.get("secret")
        if not isinstance(value, str):
            r.error(key_path(path, "secret"), "missing: every [eap.*] entry needs secret = \"...\"")
            continue
        if not value:
            r.error(key_path(path, "secret"), "empty secret")
            continue
        if ids:
            # EAP passwords are text (MS-CHAPv2 hashes their UTF-16 form): no 0x/0s decoding.
            out.append(EapSecret(name=name, ids=tuple(ids), secret=Secret(value)))
    return tuple(out)


PPK_ID_MAX = 255
"""Bytes of a PPK_ID (UTF-8); engine.wire.ppk refuses longer ones."""


def _parse_ppks(r: Reader, doc: dict) -> tuple[PpkSecret, ...]:
    out: list[PpkSecret] = []
    owner: dict[str, str] = {}
    for name, entry in (r.table(doc, "ppk", "") or {}).items():
        path = key_path("ppk", name)
        if not isinstance(entry, dict):
            r.error(path, f"expected a table [ppk.{name}] with id and secret")
            continue
        r.check_keys(entry, path, ("id", "secret"))
        ppk_id = entry.get("id")
        if not isinstance(ppk_id, str) or not ppk_id.strip():
            r.error(key_path(path, "id"), "missing: the PPK_ID that names this key, e.g. id = \"hq-ppk-2026\"")
            continue
        if len(ppk_id.encode()) > PPK_ID_MAX or not ppk_id.isprintable():
            r.error(key_path(path, "id"), f"a PPK_ID is 1 to {PPK_ID_MAX} bytes of printable text")
            continue
        if ppk_id in owner:
            r.error(key_path(path, "id"), f"[ppk.{owner[ppk_id]}] has the same id: which key applies would be "
                    "ambiguous")
            continue
        value = entry.get("secret")
        if not isinstance(value, str):
            r.error(key_path(path, "secret"), "missing: every [ppk.*] entry needs secret = \"0x...\"")
            continue
        try:
            data = _secret_value(value)
        except (ValueError, binascii.Error):
            r.error(key_path(path, "secret"), "a value starting with 0x must be hex, with 0s base64")
            continue
        if not data:
            r.error(key_path(path, "secret"), "empty secret")
            continue
        owner[ppk_id] = name
        out.append(PpkSecret(name=name, id=ppk_id, secret=Secret(data)))
    return tuple(out)


def load_secrets(path: Path, display: str) -> tuple[Secrets, list[Finding]]:
    """Read and parse a secrets file (no permission check: the caller decides)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Secrets(path=display), [Finding(display, "", "error", f"cannot read the secrets file: {reason}")]
    return parse_secrets(text, display, path.parent)


# -- lookup -----------------------------------------------------------------------
def _best(ids: tuple[Identity, ...], identity: Identity | None) -> int:
    if not ids:
        return MATCH_ANY
    if identity is None:
        return MATCH_NONE
    return max(match_level(i, identity) for i in ids)


def lookup_psk(secrets: Secrets, local: Identity | None, remote: Identity | None) -> IkeSecret | None:
    """The PSK for an IKE SA between ``local`` and ``remote`` (actual identities), as charon picks it:
    an entry qualifies when at least one of the two identities matches its ids (no ids: any);
    the best match for the remote identity wins, then the best for the local one."""
    best: IkeSecret | None = None
    best_score = (MATCH_NONE, MATCH_NONE)
    for entry in secrets.ike:
        me, other = _best(entry.ids, local), _best(entry.ids, remote)
        if me == MATCH_NONE and other == MATCH_NONE:
            continue
        if (other, me) > best_score:
            best, best_score = entry, (other, me)
    return best


def secrets_for(secrets: Secrets, local: Identity | None, remote_pattern: Identity | None) -> list[IkeSecret]:
    """Entries that can serve a connection whose remote identity is a pattern (e.g. ``*@example.org``).

    Used to check a policy before any peer connects: an entry serves the
    connection when it has no ids, one of its ids matches our identity, or one
    of its ids is acceptable for the remote pattern.
    """
    out = []
    for entry in secrets.ike:
        if not entry.ids:
            out.append(entry)
            continue
        if local is not None and any(identity_matches(i, local) for i in entry.ids):
            out.append(entry)
            continue
        if remote_pattern is not None and any(
                identity_matches(remote_pattern, i) or identity_matches(i, remote_pattern) for i in entry.ids):
            out.append(entry)
    return out


def lookup_ppk(secrets: Secrets, ppk_id: str) -> PpkSecret | None:
    """The PPK named ``ppk_id`` (exact match, as strongSwan compares PPK_IDs), or None."""
    return next((p for p in secrets.ppk if p.id == ppk_id), None)


def lookup_eap(secrets: Secrets, identity: str | bytes) -> EapSecret | None:
    """The [eap.*] entry for an EAP identity (exact, case-insensitive as strongSwan's shared keys),
    or None. ``identity`` is what the client sent (bytes) or a configured eap_id."""
    text = identity.decode("utf-8", "replace") if isinstance(identity, bytes) else str(identity)
    want = text.strip().lower()
    for entry in secrets.eap:
        if any(i.lower() == want for i in entry.ids):
            return entry
    return None
