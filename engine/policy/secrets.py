"""The secrets file: PSKs and private keys, kept apart from the policy.

Shape (TOML)::

    [ike.branch]                      # any name
    ids = ["hq.example.org", "branch.example.org"]   # empty or absent: any identity
    secret = "a long random string"   # or 0x<hex>, or 0s<base64> (as in swanctl)

    [private.gw]
    file = "private/gw.key"           # relative to the secrets file
    passphrase = "..."                # optional

The engine refuses a secrets file that group or others may read, a symbolic
link, or a file owned by someone other than root or its own user (unless the
policy is a lab), and nothing here ever puts a secret value into a message.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from engine.policy import tomlfile
from engine.policy._reader import Reader, key_path
from engine.policy.findings import Finding, PolicyError
from engine.policy.identity import (
    MATCH_ANY,
    MATCH_NONE,
    IdentityError,
    identity_matches,
    match_level,
    parse_identity,
)
from engine.policy.model import Identity, IkeSecret, PrivateKeySecret, Secrets
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


def ownership_problem(path: str | os.PathLike) -> str | None:
    """Why the file may not hold secrets for this process, as ssh judges its keys: a
    symbolic link, or owned by someone other than root or the user running the engine."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link (secrets are read from the file itself; name it instead)"
    return _owner_problem(st)


def _owner_problem(st: os.stat_result) -> str | None:
    me = os.geteuid()
    if st.st_uid not in (0, me):
        return (f"it is owned by uid {st.st_uid}, not by root or by the user running the engine (uid {me}); "
                f"run: chown {me} FILE")
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
        doc = tomlfile.loads(text, file)
    except PolicyError as exc:
        return Secrets(path=file), list(exc.findings)
    r = Reader(file, quote_values=False)
    r.check_keys(doc, "", ("ike", "private"), what="section")
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
    return Secrets(ike=tuple(ike), private=tuple(private), path=file), r.findings


def load_secrets(path: Path, display: str, *, strict: bool = False) -> tuple[Secrets, list[Finding]]:
    """Read and parse a secrets file. ``strict``: refuse a symbolic link or a file of another
    owner (see ownership_problem) on the file actually opened; the mode is the caller's check."""
    try:
        text = tomlfile.read_text(path, follow=not strict, check=_owner_problem if strict else None)
    except tomlfile.FileProblem as exc:
        return Secrets(path=display), [Finding(display, "", "error", f"cannot read the secrets file: {exc}")]
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
