"""A CA folder as the console sees it, and certificate expiry warnings.

Everything here reads or writes files and is meant for thread workers, never
the UI thread. Every operation on a folder holds ``LOCK``: the CA's index is
read-modify-write, and a reload must not read it half-way through an issue.

No private key is read here: issuing and revoking load the CA key inside
``engine.pki.ca``; this module only ever handles certificates, CRLs and the
index. Errors come back as text in a ``FolderView`` (unreadable, broken,
missing folder), never as exceptions the screen has to know about.
"""

from __future__ import annotations

import itertools
import math
import os
import shlex
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from engine.pki import ca as pki_ca
from engine.pki.certs import load_certificate_file
from engine.pki.dn import format_name, parse_dn
from engine.pki.errors import PkiError
from engine.pki.validate import load_crl_files
from engine.policy.model import Policy
from engine.policy.samples import sample_dir
from engine.secret import Secret

Clock = Callable[[], datetime]
EXPIRY_WINDOW = timedelta(days=30)
"""Certificates ending sooner than this are warned about (issue 6: 30 days before)."""
LOCK = threading.Lock()
_generation = itertools.count(1)
_CN_OID = "2.5.4.3"


# --- where the folder is ---------------------------------------------------------------------


def lab_pki_dir() -> Path:
    """The CA folder of the shipped lab: the user's data folder, never the installed samples."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "ipsec-console" / "lab-pki"


def pki_dir_for(policy: Policy | None, override: str | None = None) -> Path:
    """The CA folder: the admin's choice, else ``[engine] pki``, else ``pki/`` next to the policy file
    (for a policy shipped with ipsec-console, the lab's folder in the user's data folder)."""
    if override:
        return Path(override).expanduser()
    if policy is not None and policy.path and not policy.engine.pki_dir and _shipped(policy.path):
        return lab_pki_dir()
    base = Path(policy.path).parent if policy is not None and policy.path else Path.cwd()
    if policy is not None and policy.engine.pki_dir:
        p = Path(policy.engine.pki_dir).expanduser()
        return p if p.is_absolute() else base / p
    return base / "pki"


def _shipped(path: str) -> bool:
    try:
        return Path(path).resolve().parent == sample_dir().resolve()
    except OSError:
        return False


def crl_in_policy(d: Path, policy: Policy | None) -> bool | None:
    """Does the policy check peers against this folder's crl.pem? None when it authenticates no peer
    by certificate (then it does not matter). Paths only, no file is touched."""
    if policy is None or not any(c.remote.auth == "pubkey" for c in policy.connections):
        return None
    base = Path(policy.path).parent if policy.path else Path.cwd()
    want = os.path.normpath(os.path.abspath(d / "crl.pem"))
    return any(os.path.normpath(os.path.abspath(_resolve(base, c))) == want for c in policy.engine.crls)


def shown_path(d: Path, policy: Policy | None) -> str:
    """The folder as the screen names it: relative to the policy file when it is beside it."""
    if policy is not None and policy.path:
        base = Path(policy.path).parent
        try:
            rel = d.relative_to(base)
        except ValueError:
            pass
        else:
            return f"{rel}/ (next to {Path(policy.path).name})"
    home = str(Path.home())
    text = str(d)
    return "~" + text[len(home):] if home != "/" and text.startswith(home + os.sep) else text


# --- the folder ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderView:
    """One reading of a CA folder (an immutable snapshot for the screen)."""

    dir: Path
    state: str
    """``ok``; ``no-ca`` (nothing there yet: offer to create one); ``error`` (unreadable or broken)."""
    now: datetime
    """When it was read (the screen's clock): days left are counted from here."""
    message: str = ""
    """Why there is no CA, or what is wrong, in one sentence."""
    ca: pki_ca.CaInfo | None = None
    crl_next_update: datetime | None = None
    crl_revoked: int | None = None
    """Certificates the current CRL lists."""
    crl_problem: str = ""
    """No CRL yet, or it cannot be read."""
    certs: tuple[pki_ca.CertEntry, ...] = ()
    generation: int = 0
    """Readings are numbered in the order they were made; the screen ignores older ones."""

    def entry(self, serial_hex: str) -> pki_ca.CertEntry | None:
        for e in self.certs:
            if e.serial_hex == serial_hex:
                return e
        return None


def as_utc(t: datetime) -> datetime:
    """A naive time taken as UTC; an aware one converted to UTC."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _os_problem(d: Path, exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return (f"{d}: permission denied. The CA folder belongs to another user (the daemon's?): "
                "run the console as that user, or press f to choose another folder")
    return f"{exc.filename or d}: {exc.strerror or exc}"


def _pki_problem(exc: PkiError) -> str:
    text = str(exc)
    if "Permission denied" in text:
        text += " — run the console as the folder's owner, or press f to choose another folder"
    return text


def load_folder(d: Path, now: datetime) -> FolderView:
    """Read the CA, its CRL and what it issued. Takes ``LOCK``."""
    with LOCK:
        return _load_folder(Path(d), as_utc(now))


def _load_folder(d: Path, now: datetime) -> FolderView:
    gen = next(_generation)
    try:
        st = os.stat(d)
        if not stat.S_ISDIR(st.st_mode):
            return FolderView(d, "error", now, f"{d} is a file, not a CA folder: press f to choose another",
                              generation=gen)
        os.stat(d / "ca.crt")
    except FileNotFoundError as exc:
        what = ("the folder does not exist (creating a CA creates it)" if exc.filename == str(d)
                else "the folder holds no ca.crt")
        return FolderView(d, "no-ca", now, what, generation=gen)
    except OSError as exc:
        return FolderView(d, "error", now, _os_problem(d, exc), generation=gen)
    try:
        info = pki_ca.ca_info(d)
        certs = tuple(pki_ca.list_certs(d))
    except PkiError as exc:
        return FolderView(d, "error", now, _pki_problem(exc), generation=gen)
    except OSError as exc:
        return FolderView(d, "error", now, _os_problem(d, exc), generation=gen)
    next_update, revoked, problem = None, None, ""
    if not (d / "crl.pem").exists():
        problem = "none yet"
    else:
        try:
            latest = load_crl_files([d / "crl.pem"])[-1]
            next_update = latest.next_update_utc
            revoked = len(latest)
        except PkiError as exc:
            problem = str(exc)
        except Exception as exc:  # a CRL the library cannot even describe: say so, keep the screen
            problem = f"{d / 'crl.pem'}: {exc}"
    return FolderView(d, "ok", now, ca=info, crl_next_update=next_update, crl_revoked=revoked,
                      crl_problem=problem, certs=certs, generation=gen)


# --- changes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssueRequest:
    """What the issue form asks for."""

    cn: str
    sans: tuple[str, ...] = ()
    kind: str = "server"
    key_type: str | None = None
    """None: the CA's key type."""
    days: int = 730


@dataclass(frozen=True)
class InitRequest:
    """What the initialize-CA form asks for."""

    name: str
    key_type: str = "ecdsa-p256"
    days: int = 3650


@dataclass(frozen=True)
class Outcome:
    """The result of one change to a folder, with the folder as it is afterwards."""

    view: FolderView
    done: str = ""
    """What happened, for a notification; empty when it failed."""
    error: str = ""
    needs_passphrase: bool = False
    """The CA key is encrypted (or the passphrase was wrong): ask and try again."""
    serial: str | None = None
    """The certificate issued or revoked (hex), to select its row."""


def _needs_passphrase(exc: PkiError) -> bool:
    text = str(exc)
    return "encrypted and no passphrase" in text or "wrong passphrase" in text


def change(d: Path, clock: Clock, what: str, request, passphrase: Secret | None = None) -> Outcome:
    """Apply one change (``issue``, ``revoke``, ``crl``, ``init``) and read the folder again. Takes ``LOCK``.

    ``request``: an IssueRequest, a serial (hex) to revoke, None for a CRL, an InitRequest.
    """
    d = Path(d)
    with LOCK:
        done, error, needs, serial = "", "", False, None
        try:
            if what == "issue":
                r: IssueRequest = request
                e = pki_ca.issue(d, r.cn, r.sans, r.kind, r.key_type, r.days, ca_passphrase=passphrase, clock=clock)
                serial = e.serial_hex
                done = f"issued {e.kind} certificate {e.name} (serial {e.serial_hex[:8]}…, until " \
                       f"{e.not_after:%Y-%m-%d}): certs/{e.name}.crt, key private/{e.name}.key (0600)"
                if (e.not_after - e.not_before).days < r.days - 1:
                    # A certificate never outlives its CA: engine.pki.ca ends it with the CA.
                    done += f"; shortened to the CA's end: {r.days} days asked, " \
                            f"{(e.not_after - e.not_before).days} given"
            elif what == "revoke":
                e = pki_ca.revoke(d, request, ca_passphrase=passphrase, clock=clock)
                serial = e.serial_hex
                done = f"revoked {e.name} (serial {e.serial_hex[:8]}…); crl.pem re-signed"
            elif what == "crl":
                path = pki_ca.crl(d, ca_passphrase=passphrase, clock=clock)
                done = f"CRL re-signed: {path.name}, valid for {pki_ca.DEFAULT_CRL_DAYS} days"
            elif what == "init":
                r2: InitRequest = request
                if d == lab_pki_dir():
                    # The user's data folder itself may not exist yet (a fresh account).
                    d.parent.mkdir(parents=True, exist_ok=True)
                info = pki_ca.init_ca(d, r2.name, r2.key_type, r2.days, clock=clock)
                done = f'created CA "{info.subject}" ({info.key_type}, until {info.not_after:%Y-%m-%d})'
            else:
                raise ValueError(f"unknown PKI change {what!r}")
        except PkiError as exc:
            error, needs = _pki_problem(exc), _needs_passphrase(exc)
        except OSError as exc:
            error = _os_problem(d, exc)
        return Outcome(_load_folder(d, as_utc(clock())), done, error, needs, serial)


# --- what the screen shows -------------------------------------------------------------------


def common_name(subject: str) -> str:
    """The CN of a strongSwan-style DN (the whole text when it has none)."""
    try:
        cns = [v for oid, v in parse_dn(subject) if oid == _CN_OID]
    except PkiError:
        return subject
    return cns[-1] if cns else subject


def days_left(end: datetime, now: datetime) -> float:
    return (as_utc(end) - as_utc(now)) / timedelta(days=1)


def short_left(end: datetime, now: datetime) -> str:
    """``12d``, ``<1d``, ``10y``, ``expired`` — for a table cell."""
    d = days_left(end, now)
    if d < 0:
        return "expired"
    if d < 1:
        return "<1d"
    if d <= 999:
        return f"{math.ceil(d)}d"  # a certificate issued for 10 days has 10 left, not 9
    return f"{d / 365.25:.0f}y"


def status_of(entry: pki_ca.CertEntry, now: datetime) -> str:
    """``revoked``, ``expired``, ``expiring`` (within EXPIRY_WINDOW) or ``valid``."""
    if entry.revoked is not None:
        return "revoked"
    d = days_left(entry.not_after, now)
    if d < 0:
        return "expired"
    return "expiring" if d <= EXPIRY_WINDOW / timedelta(days=1) else "valid"


# --- expiry warnings (the dashboard) ---------------------------------------------------------


@dataclass(frozen=True)
class CertAlert:
    """One expiry warning for the alert strip."""

    key: str
    """The certificate's serial (hex): one alert per certificate."""
    text: str
    days_left: float = field(default=0.0, compare=False)


def _when(end: datetime, now: datetime) -> str:
    d = days_left(end, now)
    if d < 0:
        return f"expired on {as_utc(end):%Y-%m-%d}"
    if d < 1:
        hours = max(1, round(d * 24))
        return f"expires in {hours} hour{'s' if hours != 1 else ''}"
    n = math.ceil(d)
    return f"expires in {n} day{'s' if n != 1 else ''}"


def reissue_command(entry: pki_ca.CertEntry, d: Path) -> str:
    """The ``ipsec-console pki issue`` line that replaces this certificate (same name, SANs and kind)."""
    cn = common_name(entry.subject)
    args = ["ipsec-console", "pki", "issue", cn]
    if entry.name != cn:
        args += ["--name", entry.name]
    implied = {f"DNS:{cn}", f"email:{cn}", f"IP:{cn}"}  # issue adds the CN as a SAN by itself
    for san in entry.sans:
        if san not in implied:
            args += ["--san", san]
    if entry.kind == "client":
        args.append("--client")
    args += ["--force", "--dir", str(d)]
    return " ".join(shlex.quote(a) for a in args)


def _resolve(base: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else base / p


def expiry_alerts(policy: Policy | None, d: Path | None, now: datetime,
                  within: timedelta = EXPIRY_WINDOW) -> list[CertAlert]:
    """Warnings for certificates ending within ``within`` (or ended): the CA folder's CA and live
    certificates, and every certificate and CA the policy names. Files that cannot be read are
    skipped (loading the policy reports them). Soonest first."""
    now = as_utc(now)
    out: dict[str, CertAlert] = {}
    handled: set[str] = set()  # serials the CA folder speaks for (revoked ones too: no alert for those)
    if d is not None:
        view = load_folder(d, now)
        if view.state == "ok" and view.ca is not None:
            for e in view.certs:
                handled.add(e.serial_hex)
                if e.revoked is None and as_utc(e.not_after) - now <= within:
                    out[e.serial_hex] = CertAlert(
                        e.serial_hex, f"cert {e.name} {_when(e.not_after, now)} — reissue with: "
                        f"{reissue_command(e, d)}", days_left(e.not_after, now))
            try:
                ca_cert = load_certificate_file(d / "ca.crt")[0]
            except PkiError:
                ca_cert = None
            if ca_cert is not None:
                key = f"{ca_cert.serial_number:x}"
                handled.add(key)
                end = ca_cert.not_valid_after_utc
                if end - now <= within:
                    out[key] = CertAlert(key, f"CA {common_name(view.ca.subject)} {_when(end, now)} — every "
                                         "certificate it issued fails then: create a new CA (ipsec-console pki "
                                         "init-ca) and reissue", days_left(end, now))
    if policy is not None:
        base = Path(policy.path).parent if policy.path else Path.cwd()
        seen_files: set[str] = set()
        for conn in policy.connections:
            for role, names in (("cert", conn.local.certs if conn.local.auth == "pubkey" else ()),
                                ("CA cert", conn.remote.cacerts if conn.remote.auth == "pubkey" else ())):
                for name in names:
                    if name in seen_files:
                        continue
                    seen_files.add(name)
                    try:
                        certs = load_certificate_file(_resolve(base, name))
                    except PkiError:
                        continue
                    for cert in certs:
                        key = f"{cert.serial_number:x}"
                        end = cert.not_valid_after_utc
                        if key in handled or key in out or end - now > within:
                            continue
                        cn = common_name(format_name(cert.subject))
                        todo = ("renew it with the CA that issued it" if role == "cert" else
                                "peers' certificates from it fail then: install its successor")
                        out[key] = CertAlert(key, f"{role} {cn} ({name}, {conn.name}) {_when(end, now)} — {todo}",
                                             days_left(end, now))
    return sorted(out.values(), key=lambda a: a.days_left)
