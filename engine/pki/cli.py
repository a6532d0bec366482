"""``ipsec-console pki``: init-ca, issue, revoke, crl, list (see engine.pki.ca).

console/cli.py passes the words after ``pki`` to `main`. Errors are one line
on stderr and exit status 1; usage errors exit 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from engine.secret import Secret

from . import ca
from .errors import PkiError

PROG = "ipsec-console pki"
MAX_PASSPHRASE = ca.MAX_PASSPHRASE


def _passphrase(path: str | None) -> Secret | None:
    """The first line of a passphrase file (kept off the command line and out of ps)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            # bounded: /dev/zero or a file with no line break would be read whole into memory
            line = f.readline(MAX_PASSPHRASE + 2)
    except OSError as exc:
        raise PkiError(f"{path}: cannot read passphrase ({exc.strerror})") from None
    line = line.rstrip(b"\r\n")
    if len(line) > MAX_PASSPHRASE:
        raise PkiError(f"{path}: the passphrase (its first line) is longer than {MAX_PASSPHRASE} bytes")
    if not line:
        raise PkiError(f"{path}: the passphrase file is empty")
    return Secret(line)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS lets --dir come before or after the subcommand.
    common.add_argument("--dir", default=argparse.SUPPRESS, metavar="DIR", help="CA folder (default ./pki)")
    p = argparse.ArgumentParser(
        prog=PROG,
        description="A small certificate authority for IKE certificates.",
        epilog="Layout: DIR/ca.crt, DIR/private/ca.key (0600), DIR/certs/NAME.crt, DIR/private/NAME.key (0600), "
        "DIR/index.toml, DIR/crl.pem.",
    )
    p.add_argument("--dir", default="pki", metavar="DIR", help="CA folder (default ./pki)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("init-ca", parents=[common], help="create a CA (key and self-signed certificate)",
                       description="Create a CA: DIR/ca.crt and DIR/private/ca.key (mode 0600).")
    s.add_argument("name", help='CA name: a DN ("O=Acme, CN=Acme CA") or a plain common name')
    s.add_argument("--key-type", choices=ca.KEY_TYPES, default="ecdsa-p256", help="default ecdsa-p256")
    s.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    s.add_argument("--crl-uri", metavar="URI", help="CRL distribution point written into issued certificates")
    s.add_argument("--passphrase-file", metavar="FILE", help="encrypt the CA key with the first line of FILE")
    s.add_argument("--force", action="store_true", help="replace an existing CA in DIR")

    s = sub.add_parser("issue", parents=[common], help="issue a server or client certificate and key",
                       description="Issue DIR/certs/NAME.crt and DIR/private/NAME.key (mode 0600), signed by the CA. "
                       "The CN is also put in the subjectAltName when it is a host name, address or e-mail.")
    s.add_argument("cn", help="common name, e.g. gw.example.com or alice@example.com")
    s.add_argument("--san", action="append", default=[], metavar="SAN",
                   help="subjectAltName: DNS:name, email:addr, IP:addr or a bare value (repeatable)")
    kind = s.add_mutually_exclusive_group()
    kind.add_argument("--kind", choices=("server", "client"), default="server",
                      help="extendedKeyUsage serverAuth or clientAuth, plus ikeIntermediate (default server)")
    kind.add_argument("--client", dest="kind", action="store_const", const="client", help="same as --kind client")
    s.add_argument("--key-type", choices=ca.KEY_TYPES, default=None, help="default: the CA's key type")
    s.add_argument("--days", type=int, default=730, help="validity in days (default 730, never past the CA's end)")
    s.add_argument("--name", help="file name stem (default: the CN)")
    s.add_argument("--subject", metavar="DN", help="full subject DN instead of the CA's DN with CN replaced")
    s.add_argument("--ca-passphrase-file", metavar="FILE", help="passphrase of an encrypted CA key")
    s.add_argument("--key-passphrase-file", metavar="FILE", help="encrypt the new key with the first line of FILE")
    s.add_argument("--force", action="store_true", help="replace existing files of the same name; a certificate "
                   "of that name still valid is revoked (superseded) and the CRL re-signed")

    s = sub.add_parser("revoke", parents=[common], help="revoke a certificate and publish a new CRL",
                       description="Mark a certificate revoked in DIR/index.toml and re-sign DIR/crl.pem.")
    s.add_argument("cert", metavar="NAME|SERIAL", help="certificate name or hex serial (as `list` shows)")
    s.add_argument("--reason", choices=tuple(ca.REVOCATION_REASONS), default="unspecified")
    s.add_argument("--ca-passphrase-file", metavar="FILE", help="passphrase of an encrypted CA key")

    s = sub.add_parser("crl", parents=[common], help="sign a fresh CRL into DIR/crl.pem",
                       description="Sign a CRL listing every revoked certificate into DIR/crl.pem.")
    s.add_argument("--days", type=int, default=ca.DEFAULT_CRL_DAYS, help=f"validity in days (default {ca.DEFAULT_CRL_DAYS})")
    s.add_argument("--ca-passphrase-file", metavar="FILE", help="passphrase of an encrypted CA key")

    sub.add_parser("list", parents=[common], help="list issued certificates",
                   description="List every certificate the CA issued, with expiry and revocation.")
    return p


def _fmt_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d")


def _print_list(directory: Path, out, now: datetime) -> None:
    info = ca.ca_info(directory)
    print(f"CA: {info.subject}  ({info.key_type}, until {_fmt_time(info.not_after)})", file=out)
    entries = ca.list_certs(directory)
    if not entries:
        print("no certificates issued yet", file=out)
        return
    rows = [("NAME", "SERIAL", "KIND", "NOT AFTER", "STATUS", "SUBJECT / SANS")]
    for e in entries:
        if e.revoked:
            status = f"revoked {_fmt_time(e.revoked)}"
        elif e.not_after < now:
            status = "expired"
        else:
            status = "valid"
        rows.append((e.name, e.serial_hex, e.kind, _fmt_time(e.not_after), status, f"{e.subject}  [{', '.join(e.sans)}]"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5], file=out)


def main(argv: list[str] | None = None, *, clock: ca.Clock = ca.utc_now) -> int:
    """Run one pki command; returns the exit status. `clock` is for tests."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    directory = Path(args.dir)
    out = sys.stdout
    try:
        if args.command == "init-ca":
            info = ca.init_ca(directory, args.name, args.key_type, args.days, passphrase=_passphrase(args.passphrase_file),
                              crl_uri=args.crl_uri, force=args.force, clock=clock)
            print(f'created CA "{info.subject}" ({info.key_type}, until {_fmt_time(info.not_after)}): '
                  f"{info.cert_path}, {info.key_path}", file=out)
        elif args.command == "issue":
            e = ca.issue(directory, args.cn, args.san, args.kind, args.key_type, args.days, name=args.name,
                         subject=args.subject, ca_passphrase=_passphrase(args.ca_passphrase_file),
                         key_passphrase=_passphrase(args.key_passphrase_file), force=args.force,
                         clock=clock)
            print(f'issued {e.kind} certificate "{e.subject}" serial {e.serial_hex} [{", ".join(e.sans)}] '
                  f"until {_fmt_time(e.not_after)}: {directory / 'certs' / (e.name + '.crt')}, "
                  f"{directory / 'private' / (e.name + '.key')}", file=out)
            if e.cut_at_ca_end:
                # Said, not silent: the admin asked for longer and would otherwise find out at expiry.
                print(f"{PROG}: warning: --days {args.days} reaches past the CA's own end: the certificate "
                      f"ends with the CA on {_fmt_time(e.not_after)} (renew the CA, init-ca in another "
                      "folder, to issue for longer)", file=sys.stderr)
        elif args.command == "revoke":
            e = ca.revoke(directory, args.cert, args.reason, ca_passphrase=_passphrase(args.ca_passphrase_file),
                          clock=clock)
            print(f'revoked "{e.subject}" serial {e.serial_hex} ({e.reason}); CRL updated: {directory / "crl.pem"}', file=out)
        elif args.command == "crl":
            path = ca.crl(directory, args.days, ca_passphrase=_passphrase(args.ca_passphrase_file), clock=clock)
            print(f"CRL valid for {args.days} days: {path}", file=out)
        elif args.command == "list":
            _print_list(directory, out, ca._now(clock))
    except PkiError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{PROG}: error: {exc.filename or directory}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
