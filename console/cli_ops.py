"""The operations commands of ``ipsec-console``: reload, stats, import, export,
doc, audit; ``check``'s output formats; ``--version``.

console/cli.py adds these parsers (:func:`add_parsers`) and dispatches to
:data:`HANDLERS`; the work is in engine.ops and engine.policy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

SUBCOMMANDS = ("reload", "stats", "import", "export", "doc", "audit")


def version_text() -> str:
    import platform

    from engine.ops.version import engine_version
    from engine.runtime.control import PROTOCOL_VERSION

    return (f"ipsec-console {engine_version()} (IKEv2 + ESP/AH engine, control protocol {PROTOCOL_VERSION}, "
            f"Python {platform.python_version()})")


def _days(text: str) -> int:
    """A whole number of days, 0 or more (argparse type)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n}: a number of days is 0 or more")
    return n


class _Version(argparse.Action):
    """``--version``, computed only when asked (it imports the engine)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None) -> None:
        super().__init__(option_strings, dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_text())
        parser.exit()


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_Version, help="print the version and exit")


def add_check_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json", "github"), default="text",
                   help="text: FILE:LINE:COL: KEY.PATH: severity: message (default); json: one object; "
                   "github: workflow annotations (::error file=...,line=...)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too (never on advice: info)")


def add_parsers(sub, add_control) -> None:
    """The operations subcommands (``add_control`` adds --control PATH, and --timeout SECONDS)."""
    p = sub.add_parser("reload", help="apply the policy file again to the running daemon (like SIGHUP)",
                       description="Make the daemon read its policy file again and apply it: unchanged "
                       "connections keep their SAs, the IKE SAs of removed and changed connections are deleted "
                       "(unlike swanctl --load-all, which leaves an unloaded connection's SAs up); a file that "
                       "does not validate changes nothing.")
    add_control(p, timeout=True)

    p = sub.add_parser("stats", help="engine counters (like swanctl --stats)",
                       description="Uptime, IKE and CHILD SAs, traffic, drops and IKE counters of the daemon.")
    add_control(p, timeout=True)
    p.add_argument("--json", action="store_true", help="JSON output")

    p = sub.add_parser("import", help="convert a swanctl.conf into a policy and a secrets file",
                       description="Read a strongSwan swanctl.conf (connections, children, secrets) and write "
                       "the equivalent policy TOML and secrets TOML (mode 0600). Every key that has no "
                       "equivalent here is named in a warning on stderr.")
    p.add_argument("swanctl_conf", metavar="SWANCTL_CONF", help="the swanctl.conf to read")
    p.add_argument("-o", "--output", metavar="POLICY", help="policy file to write (default: NAME.toml beside "
                   "SWANCTL_CONF's name, in the current folder)")
    p.add_argument("--secrets", metavar="SECRETS", help="secrets file to write (default: POLICY with "
                   ".secrets.toml)")
    p.add_argument("--datapath", choices=("kernel", "userspace"), default="kernel",
                   help="datapath of the new policy (default kernel)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")

    p = sub.add_parser("export", help="write a policy as a strongSwan swanctl.conf",
                       description="Write CONFIG as a swanctl.conf that strongSwan's charon loads "
                       "(swanctl --load-all). Secrets stay out of it unless --secrets names a file for them.")
    p.add_argument("config", metavar="CONFIG", help="policy TOML file")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--secrets", metavar="FILE", help="also write the PSKs and private key references as a "
                   "swanctl secrets section to FILE (mode 0600), included by the output")
    p.add_argument("--force", action="store_true", help="replace existing output files")

    p = sub.add_parser("doc", help="document a policy for auditors (Markdown or HTML)",
                       description="Who talks to whom, networks, protocols and ports, algorithms and their "
                       "strength, authentication, keys and certificates, the rules' decisions, lint findings "
                       "and a diagram. With --keys or --schema: the reference of every policy key, or a JSON "
                       "Schema for editors.")
    p.add_argument("config", metavar="CONFIG", nargs="?", help="policy TOML file")
    p.add_argument("--format", choices=("md", "html"), default="md", help="default md")
    p.add_argument("--keys", action="store_true", help="the reference of every policy key (Markdown)")
    p.add_argument("--schema", action="store_true", help="a JSON Schema of the policy file")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

    p = sub.add_parser("audit", help="unused connections and rules, old keys, expiring certificates, weak suites",
                       description="Report connections, children and rules that carried no traffic for DAYS, "
                       "PSK and key ages, certificates near expiry, weak suites peers actually negotiated, and "
                       "the recent change journal. Reads the daemon's state folder (usage counters kept across "
                       "restarts).")
    p.add_argument("config", metavar="CONFIG", help="policy TOML file")
    p.add_argument("--days", type=_days, default=30, help="unused for this many days (default 30; 0: never used)")
    p.add_argument("--expiry-days", type=_days, default=30, help="certificates expiring within this many days "
                   "(default 30)")
    p.add_argument("--max-key-age", type=_days, default=365, help="PSKs and keys older than this many days "
                   "(default 365)")
    p.add_argument("--state", metavar="DIR", help="state folder (default: the policy's, see state_dir)")
    p.add_argument("--json", action="store_true", help="JSON output")


# -------------------------------------------------------------------- check
def _github_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def located_findings(findings) -> list[dict]:
    """Findings as dicts with a line and column each (from the key path when the finding has none)."""
    from engine.policy import tomlfile
    from engine.policy.locate import key_positions, locate

    positions: dict[str, dict] = {}
    out = []
    for f in findings:
        line, column = f.line, f.column
        if line is None:
            if f.file not in positions:
                try:  # a FIFO or /dev/zero named as the policy is never read (engine.policy.tomlfile)
                    positions[f.file] = key_positions(tomlfile.read_text(f.file))
                except tomlfile.FileProblem:
                    positions[f.file] = {}
            line, column = locate(positions[f.file], f.key_path)
        out.append({"file": f.file, "line": line, "column": column or 1, "key_path": f.key_path,
                    "severity": f.severity, "rule": f.rule, "message": f.message})
    return out


def cmd_check(args) -> int:
    from engine.policy.check import run_check
    from engine.policy.samples import resolve_policy_path

    findings = located_findings(run_check(args.config))
    errors = sum(1 for f in findings if f["severity"] == "error")
    infos = sum(1 for f in findings if f["severity"] == "info")
    warnings = len(findings) - errors - infos
    shown = resolve_policy_path(args.config)
    failed = errors > 0 or (args.strict and warnings > 0)  # advice (info) never fails
    if args.format == "json":
        print(json.dumps({"file": shown, "valid": errors == 0, "errors": errors, "warnings": warnings,
                          "findings": findings, "infos": infos}, indent=2))
        return 1 if failed else 0
    for f in findings:
        if args.format == "github":
            title = "ipsec-console check" + (f" [{f['rule']}]" if f["rule"] else "")
            level = "notice" if f["severity"] == "info" else f["severity"]  # GitHub's name for advice
            print(f"::{level} file={_github_escape(f['file'], True)},line={f['line']},col={f['column']},"
                  f"title={_github_escape(title, True)}::"
                  + _github_escape((f"{f['key_path']}: " if f["key_path"] else "") + f["message"]))
        else:
            where = f"{f['file']}:{f['line']}:{f['column']}"
            print(f"{where}: {f['key_path']}: {f['severity']}: {f['message']}" if f["key_path"]
                  else f"{where}: {f['severity']}: {f['message']}")
    plural = lambda n, w: f"{n} {w}{'s' if n != 1 else ''}"  # noqa: E731
    advice = f", {plural(infos, 'note')}" if infos else ""  # info findings: advice, never a failure
    if errors:
        print(f"{shown}: invalid: {plural(errors, 'error')}, {plural(warnings, 'warning')}{advice}")
    elif warnings:
        print(f"{shown}: valid, {plural(warnings, 'warning')}{advice}" + (" (--strict: failing)" if args.strict else ""))
    else:
        print(f"{shown}: valid{advice}")
    return 1 if failed else 0


# -------------------------------------------------------------------- control socket
async def _control(args) -> int:
    from console.cli_control import call_timeout
    from engine.ops.stats import format_stats
    from engine.runtime.client import ControlClient, ControlError

    client = ControlClient(args.control, timeout=call_timeout(getattr(args, "timeout", None)))
    try:
        if args.command == "reload":
            res = await client.call("reload")
            changes = [f"{what} {', '.join(res.get(what) or [])}" for what in ("added", "removed", "changed")
                       if res.get(what)]
            print("reloaded: " + ("; ".join(changes) if changes else "no connection changed"))
        else:
            res = await client.call("stats")
            print(json.dumps(res, indent=2) if args.json else format_stats(res))
        return 0
    except ControlError as exc:
        print(f"ipsec-console: {exc}", file=sys.stderr)
        for f in exc.findings:
            print(f, file=sys.stderr)
        return 1
    finally:
        await client.close()


def cmd_control(args) -> int:
    return asyncio.run(_control(args))


# -------------------------------------------------------------------- files
def _folder_problem(path: str) -> str | None:
    """Why ``path`` cannot be created where it is named: its folder is missing or not a folder (said
    before anything is written, naming the folder, not as an errno about a temporary file); or it
    names a folder (``out/`` became a file ``out``; an existing folder got "use --force", then EISDIR)."""
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        return f"{path} is a folder: name the file to write"
    folder = Path(path).parent
    if folder.is_dir():
        return None
    if folder.exists():
        return f"{path}: {folder} is not a folder"
    return f"{path}: the folder {folder} does not exist (create it first)"


def _check_outputs(paths: list[str | None], force: bool) -> str | None:
    """The first output that cannot be written (missing folder) or would be replaced without --force."""
    for p in paths:
        if p and (problem := _folder_problem(p)):
            return problem
    for p in paths:
        if p and not force and os.path.lexists(p):
            return f"{p} exists (use --force to replace it)"
    return None


def _write(path: str, text: str, *, mode: int | None = None, force: bool = True) -> None:
    """Write atomically; ``mode`` from the moment the file holds ``text`` (secrets: 0600), else an
    existing file keeps its mode and a new one is 0644. Without ``force`` the file is created only if
    nothing has that name at that moment (FileExistsError): a check before it leaves a window in
    which another export's file or an editor's would be replaced."""
    from engine.policy.save import NEW_FILE_MODE, atomic_write

    if force:
        atomic_write(Path(path), text.encode("utf-8"), mode=mode)
        return
    _create(Path(path), text.encode("utf-8"), NEW_FILE_MODE if mode is None else mode)


def _create(target: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file ``target``: a temporary file, complete and synced, is linked in
    (link() fails on any existing name, a dangling symlink too), so ``target`` is never half-written."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise FileExistsError(f"{target} exists (use --force to replace it)") from None
        except OSError:  # no hard links here (vfat, some network shares): O_EXCL, removed if incomplete
            _create_in_place(target, data, mode)
    finally:
        os.unlink(tmp)


def _create_in_place(target: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise FileExistsError(f"{target} exists (use --force to replace it)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _write_pair(first: tuple[str, str, int | None], second: tuple[str, str, int | None] | None,
                force: bool) -> None:
    """Write two files (secrets, then what includes them). Without ``force``, a second file that
    cannot be written takes the first, just created, with it: never a new secrets file beside a
    policy or conf left as it was."""
    path, text, mode = first
    _write(path, text, mode=mode, force=force)
    if second is None:
        return
    try:
        _write(second[0], second[1], mode=second[2], force=force)
    except BaseException:
        if not force:
            Path(path).unlink(missing_ok=True)
        raise


def cmd_import(args) -> int:
    from engine.ops.swanctl_import import SwanctlError, import_file

    src = Path(args.swanctl_conf)
    policy_path = args.output or (src.stem if src.suffix == ".conf" else src.name) + ".toml"
    secrets_path = args.secrets or str(Path(policy_path).with_name(Path(policy_path).stem + ".secrets.toml"))
    try:
        out_dir = Path(policy_path).resolve().parent
        result = import_file(src, secrets_name=os.path.relpath(Path(secrets_path).resolve(), out_dir),
                             datapath=args.datapath, out_dir=out_dir, policy_name=policy_path)
    except SwanctlError as exc:
        print(f"ipsec-console: {exc}", file=sys.stderr)
        return 1
    for w in result.warnings:
        print(w, file=sys.stderr)
    problem = _check_outputs([policy_path, secrets_path], args.force)
    if problem:  # before writing either: never a new secrets file beside a policy left as it was
        print(f"ipsec-console: {problem}", file=sys.stderr)
        return 1
    try:
        _write_pair((secrets_path, result.secrets_toml, 0o600), (policy_path, result.policy_toml, None), args.force)
    except OSError as exc:
        print(f"ipsec-console: {exc}", file=sys.stderr)
        return 1
    for e in result.errors:
        print(e, file=sys.stderr)
    print(f"wrote {policy_path} ({result.counts}) and {secrets_path} (mode 0600); "
          f"{len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}"
          + (f", {len(result.errors)} errors to fix" if result.errors else "")
          + f"; next: ipsec-console check {policy_path}")
    return 1 if result.errors else 0


def cmd_export(args) -> int:
    from engine.ops.swanctl_export import export_policy
    from engine.policy.findings import PolicyError
    from engine.policy.parse import load_policy

    try:
        policy = load_policy(args.config, strict_secrets_mode=False)
    except PolicyError as exc:
        for f in exc.findings:
            print(f.format(), file=sys.stderr)
        return 1
    problem = _check_outputs([args.secrets, args.output], args.force)
    if problem:  # before writing either: a secrets file beside no conf, or an earlier export replaced
        print(f"ipsec-console: {problem}; nothing was written", file=sys.stderr)
        return 1
    result = export_policy(policy, secrets_include=os.path.abspath(args.secrets) if args.secrets else None)
    for w in result.warnings:
        print(w, file=sys.stderr)
    if result.commands:
        print("copy the private keys and CRLs where swanctl --load-creds reads them:", file=sys.stderr)
        for c in result.commands:
            print(f"  {c}", file=sys.stderr)
    try:
        if args.secrets:
            _write_pair((args.secrets, result.secrets_conf, 0o600),
                        (args.output, result.conf, None) if args.output else None, args.force)
        elif args.output:
            _write(args.output, result.conf, force=args.force)
        if not args.output:
            sys.stdout.write(result.conf)
    except OSError as exc:
        print(f"ipsec-console: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_doc(args) -> int:
    if args.keys or args.schema:
        from engine.ops.reference import json_schema_text, reference_markdown

        text = json_schema_text() if args.schema else reference_markdown()
    else:
        if not args.config:
            print("ipsec-console doc: CONFIG is needed (or --keys / --schema)", file=sys.stderr)
            return 2
        from engine.ops.doc import document_file
        from engine.policy.findings import PolicyError

        try:
            text = document_file(args.config, fmt=args.format)
        except PolicyError as exc:
            for f in exc.findings:
                print(f.format(), file=sys.stderr)
            return 1
    if args.output:
        problem = _folder_problem(args.output)
        if problem:
            print(f"ipsec-console: {problem}", file=sys.stderr)
            return 1
        try:
            _write(args.output, text)
        except OSError as exc:
            print(f"ipsec-console: {exc}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


def cmd_audit(args) -> int:
    from engine.ops.audit import AuditOptions, audit_file, format_report
    from engine.policy.findings import PolicyError

    options = AuditOptions(unused_days=args.days, expiry_days=args.expiry_days, max_key_age_days=args.max_key_age,
                           state=Path(args.state) if args.state else None)
    try:
        report = audit_file(args.config, options)
    except PolicyError as exc:
        for f in exc.findings:
            print(f.format(), file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


HANDLERS = {
    "reload": cmd_control,
    "stats": cmd_control,
    "import": cmd_import,
    "export": cmd_export,
    "doc": cmd_doc,
    "audit": cmd_audit,
}
