"""The change journal: who changed the policy, when, how, and the diff.

One JSON object per line in ``STATE_DIR/journal.jsonl`` (mode 0600), appended
for every save of a policy file and every policy applied to a running engine
(console, control socket, ``reload``, SIGHUP). Policies hold no secrets (those
live in the secrets file, which is never journaled), so the diff may be kept
whole; it is cut at MAX_DIFF characters so one entry stays readable.

Who: the login user (``/proc/PID/loginuid``, which survives ``sudo``) and the
effective user, of this process or, for the control socket, of the peer
process (``SO_PEERCRED``, from the kernel: a client cannot claim another name).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import pwd
import socket
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.crypto.digests import sha256
from engine.ops.state import state_dir
from engine.policy.model import Policy
from engine.policy.serialize import policy_to_toml

JOURNAL = "journal.jsonl"
MAX_DIFF = 256 * 1024
log = logging.getLogger("engine.journal")
_NO_LOGIN = 4294967295  # (uid_t)-1: no login session (a service started by systemd)


@dataclass(frozen=True)
class Who:
    """Who made a change."""

    user: str
    """The effective user's name (root after sudo)."""
    login: str | None = None
    """The login user behind it (the admin who ran sudo), when the kernel knows one."""
    pid: int | None = None

    def __str__(self) -> str:
        if self.login and self.login != self.user:
            return f"{self.login} (as {self.user})"
        return self.user


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _login(pid: int | str) -> str | None:
    try:
        uid = int(Path(f"/proc/{pid}/loginuid").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if uid == _NO_LOGIN else _name(uid)


def this_process() -> Who:
    return Who(user=_name(os.geteuid()), login=_login("self"), pid=os.getpid())


def peer_of(sock: socket.socket | None) -> Who | None:
    """The process at the other end of a unix socket, from the kernel's SO_PEERCRED."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
    except OSError:
        return None
    return Who(user=_name(uid), login=_login(pid), pid=pid)


def _sha(text: str | None) -> str | None:
    return None if text is None else sha256(text.encode()).hex()


def unified_diff(old: str | None, new: str, path: str) -> str:
    diff = "".join(difflib.unified_diff((old or "").splitlines(keepends=True), new.splitlines(keepends=True),
                                        f"a/{path}", f"b/{path}", n=2))
    return diff if len(diff) <= MAX_DIFF else diff[:MAX_DIFF] + "\n... (diff cut)\n"


def record(policy: Policy, *, action: str, via: str, old_text: str | None, new_text: str,
           who: Who | None = None, result: dict | None = None, now: float | None = None) -> Path | None:
    """Append one entry for ``policy``'s state folder; returns the journal's path, or None when
    the policy has no state folder (see engine.ops.state), nothing changed, or the journal could not
    be written (logged: the change itself was made, and must not be reported as failed)."""
    if old_text == new_text:
        return None
    try:
        return _record(policy, action=action, via=via, old_text=old_text, new_text=new_text, who=who,
                       result=result, now=now)
    except OSError as exc:
        log.warning("change journal not written: %s: %s", exc.filename or "state folder", exc.strerror or exc)
        return None


def _record(policy: Policy, *, action: str, via: str, old_text: str | None, new_text: str,
            who: Who | None, result: dict | None, now: float | None) -> Path | None:
    folder = state_dir(policy, create=True)
    if folder is None:
        return None
    who = who or this_process()
    t = time.time() if now is None else now
    path = policy.path or "<string>"
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
        "unix": round(t, 3),
        "action": action,
        "via": via,
        "who": asdict(who),
        "file": path,
        "old_sha256": _sha(old_text),
        "new_sha256": _sha(new_text),
        "result": result or {},
        "diff": unified_diff(old_text, new_text, os.path.basename(path)),
    }
    journal = folder / JOURNAL
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return journal


def read(folder: Path) -> list[dict]:
    """Every entry of a journal, oldest first (lines that do not parse, or are not UTF-8, are skipped).
    Raises OSError when the journal exists but cannot be read (a folder, no permission)."""
    try:
        lines = (folder / JOURNAL).read_bytes().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            entry = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def record_applied(policy: Policy, applied, *, old_text: str | None, new_text: str | None, via: str,
                   who: Who | None = None) -> Path | None:
    """:func:`record` for a policy a runtime just applied (``applied``: its PolicyApplied event)."""
    if new_text is None:
        new_text = policy_to_toml(policy)
    return record(policy, action="apply", via=via, old_text=old_text, new_text=new_text, who=who,
                  result={"added": list(applied.added), "removed": list(applied.removed),
                          "changed": list(applied.changed)})
